"""The ``fedtiny`` command: a thin Typer layer over library functions. Errors print one line, exit 2."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedtiny.errors import FedTinyError
from fedtiny.summary import Summary, as_summary

if TYPE_CHECKING:
    from fedtiny.interrupt import StopSignal
    from fedtiny.report.progress import RoundProgress

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Federated on-device learning for int8 TinyML models.",
)

#: a results directory is one that holds this file (written before the first round)
RESOLVED = "scenario.resolved.toml"


def _fail(exc: BaseException) -> None:
    typer.echo(f"fedtiny: error: {exc}", err=True)
    raise typer.Exit(2)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedtiny")
    except PackageNotFoundError:  # a source tree that is not installed
        from fedtiny import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedtiny {_version()}")
        raise typer.Exit()


@cli.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Federated on-device learning for int8 TinyML models."""


@cli.command()
def run(
    scenario: Path | None = typer.Argument(
        None, help="scenario TOML file, e.g. scenarios/quickstart.toml (not needed with --resume)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="results directory (default: output.dir of the scenario, runs/NAME)"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override a key, e.g. --set rounds=50 --set fleet.devices=100"
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="continue the killed run in this results directory"
    ),
    force: bool = typer.Option(
        False, "--force", help="replace the results of an earlier run in the results directory"
    ),
    ray_address: str = typer.Option(
        "", "--ray-address", help="run on an existing Ray cluster (default: $RAY_ADDRESS or a local Ray)"
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="show Flower's, Ray's and TensorFlow's output (default: DIR/fedtiny.log)"
    ),
) -> None:
    """Run a scenario on Flower's simulation runtime and write results.

    A scenario is a TOML file that describes one experiment: the task and its base model, the fleet
    (devices, gateways, boards, field condition), on-device training, the server strategy, drift events,
    evaluation and output. Every key has a default; `fedtiny keys` lists them all with their type, default,
    range and meaning, `fedtiny scenarios` lists the ready scenarios in scenarios/. SCENARIO is such a
    file, e.g. scenarios/quickstart.toml. The results go to --out (default: the scenario's output.dir);
    an earlier run's results there are kept unless --force.
    """
    from fedtiny import runlock
    from fedtiny.plan import load_scenario

    lock: runlock.RunLock | None = None  # DIR/fedtiny.lock: one run at a time in a results directory
    try:
        if resume is not None:
            # a resumed run must be the run that was started: same scenario, no overrides
            if scenario is not None or set_:
                raise FedTinyError(
                    "--resume continues the run recorded in DIR/scenario.resolved.toml; "
                    "give no scenario file and no --set with it"
                )
            resolved = resume / "scenario.resolved.toml"
            if not resolved.is_file():
                raise FedTinyError(
                    f"{resume}: not a results directory (no scenario.resolved.toml); nothing to resume"
                )
            s = load_scenario(resolved)
        elif scenario is None:
            raise FedTinyError("missing scenario file (or --resume DIR)")
        else:
            s = load_scenario(scenario, set_)
        out_dir = resume or out or Path(s.output.dir.format(name=s.name))
        if out_dir.is_dir():  # before anything there is looked at: a live run owns it, or nobody does
            lock = runlock.acquire(out_dir, say=lambda line: typer.echo(line, err=True))
        if resume is None:
            if (out_dir / RESOLVED).is_file() and not force:
                raise FedTinyError(
                    f"{out_dir}: holds the results of an earlier run ({RESOLVED}); pass --force to replace "
                    "them, or --out DIR for another directory"
                )
            if out_dir.exists() and not out_dir.is_dir():
                raise FedTinyError(
                    f"{out_dir}: exists and is not a directory; pass --out DIR for another one"
                )
            # scenario.resolved.toml records the directory actually used
            s.output.dir = str(out_dir.resolve()).replace("{", "{{").replace("}", "}}")
        out_dir.mkdir(parents=True, exist_ok=True)
        if lock is None:
            lock = runlock.acquire(out_dir, say=lambda line: typer.echo(line, err=True))
    except FedTinyError as exc:
        if lock is not None:
            lock.release()
        _fail(exc)
    assert lock is not None
    from fedtiny import lifeline
    from fedtiny.interrupt import RunInterrupted, StopSignal
    from fedtiny.report.progress import RoundProgress
    from fedtiny.runner import run_scenario

    lifeline.guard()  # whatever this run starts dies with it, however it ends (fedtiny.lifeline)
    prog = RoundProgress(s.rounds, "base condition" if s.data.path else "factory test set")
    # Ctrl-C / SIGTERM / SIGHUP: the rounds stop at the next exchange, the results of the rounds done are written,
    # every process the run started ends, exit 130 / 143 (fedtiny.interrupt)
    stop = StopSignal(on_force=lambda signum: _forced_stop(stop, prog, out_dir, signum))
    stop.before_exit.append(lock.release)
    try:
        with stop, prog, _log_to_file(out_dir / "fedtiny.log", verbose):
            summary = run_scenario(
                s,
                out_dir,
                log=prog.log,
                progress=prog.update,
                resume=resume is not None,
                ray_address=ray_address,
                stop=stop,
                verbose=verbose,
            )
    except RunInterrupted as exc:
        from fedtiny.interrupt import kill_children

        with contextlib.suppress(OSError):  # stderr may be a closed terminal (SIGHUP)
            typer.echo(_interrupted_message(out_dir, exc.signum, exc.summary), err=True)
        kill_children(stop.started)  # Ray workers that outlived the raylet
        lock.release()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(
            exc.exit_code
        )  # everything is written; skip the interpreter's slow teardown of Ray and Flower
    except (FedTinyError, RuntimeError) as exc:  # RuntimeError: Flower/Ray failures, reported in one line
        lock.release()
        _fail(exc)
    lock.release()
    from fedtiny.report.verdict import falling, learning_hurt

    for hurt in learning_hurt(summary):  # said first: the run's most important finding
        _say(f"warning: {hurt.text()}")
    _say(
        f"done: accuracy on the devices' data {100 * summary['initial_accuracy']:.1f}% -> "
        f"{100 * summary['final_accuracy']:.1f}% in {summary['rounds']} rounds ({summary['wall_seconds']} s); results in {out_dir}"
    )
    if _group_sizes(summary):
        typer.echo(_group_sizes(summary))
    if summary.get("comparison") and any("pre_drift" in r for r in summary["comparison"]):
        from fedtiny.report.drift import format_table

        typer.echo(format_table(summary["comparison"]))
        never = [
            r for r in summary["comparison"] if r.get("recovery") == "never" and r.get("method") != "static"
        ]
        if never:
            r = never[0]
            seen = int(r.get("end", s.rounds)) - int(r["at"]) + 1
            rounds = "round" if seen == 1 else "rounds"
            line = (
                f"never: not back to {round(100 * s.eval.recover)}% of the pre-drift accuracy within the {seen} "
                f"{rounds} after the drift (the static model never learns); "
            )
            if falling(r):  # more rounds would only show more of the fall
                line += f"still falling: try smaller on-device steps (--set train.lr={s.train.lr / 2:g})"
            else:
                line += f"more rounds show whether it comes back (--set rounds={max(2 * s.rounds, int(r['at']) + 20)})"
            _say(line)
    if (out_dir / "report.html").is_file():
        _say(f"report: {out_dir / 'report.html'} (the answer with 95% intervals, plots, what to try next)")


@cli.command()
def info(
    model: Path = typer.Argument(..., help=".tflite model"),
    board: str | None = typer.Option(
        None,
        "--board",
        help="a board profile (nano33ble, esp32s3, stm32h7, rp2040: fedtiny/fleet/boards.py): also print the "
        "firmware build options the model needs there (FT_MAX_CLASSES, FT_MAX_DIM, FT_TFL_ARENA_SIZE, "
        "FT_TFL_MAX_TENSORS/OPS, FT_SLOT_SIZE, FT_CACHE_CAPACITY), whether it fits the board's RAM and flash, "
        'and the build command (make -C firmware FT_DEFS="-D..."); exit 1 when it does not fit',
    ),
) -> None:
    """Print a model's input, ops, head path, feature tensor, classes, size and tensor arena; or why fedtiny
    cannot train it. With --board, the firmware build it needs on that board.

    Exit status: 0; 1 with --board when the model does not fit the board; 2 for a file that is missing or not
    a model fedtiny can train, or an unknown board."""
    from fedtiny.model.info import model_info

    fit = None
    try:
        if board is not None:
            from fedtiny.fleet.boards import get_board

            profile = get_board(board)
        data = _read(model)
        mi = model_info(data)
        lines = mi.lines()
        if board is not None:
            from fedtiny.fleet.fit import board_fit, board_plan, fit_lines

            arena, how, tensors, ops, refusal = board_plan(data, mi, profile)
            fit = board_fit(mi, profile, arena, how, tensors, ops, refusal)
            lines += fit_lines(fit, model)
    except FedTinyError as exc:
        _fail(FedTinyError(str(exc) if str(exc).startswith(str(model)) else f"{model}: {exc}"))
    for line in lines:
        typer.echo(line)
    if fit is not None and not fit.fits:
        raise typer.Exit(1)


@cli.command()
def export(
    model: Path = typer.Argument(..., help=".tflite model"),
    header: Path = typer.Option(..., "--header", help="C header to write"),
    name: str = typer.Option("fedtiny_model", "--name", help="C array name"),
) -> None:
    """Export a model as a C array header for firmware."""
    from fedtiny.model.export import export_header

    try:
        path = export_header(_read(model), header, name)
    except (FedTinyError, ValueError) as exc:
        _fail(FedTinyError(str(exc) if str(exc).startswith(str(model)) else f"{model}: {exc}"))
    typer.echo(f"wrote {path}")


@cli.command()
def init(
    model: Path = typer.Option(
        ...,
        "--model",
        help="your int8 .tflite classifier, or a Keras one (.keras/.h5): converted to int8 as `fedtiny run` "
        "does, TensorFlow's output going to OUT's NAME.init.log",
    ),
    data: Path = typer.Option(
        ..., "--data", help="your recordings: a .npz file, a folder of class folders, or a .csv file"
    ),
    out: Path = typer.Option(Path("scenario.toml"), "--out", help="scenario file to write"),
    force: bool = typer.Option(False, "--force", help="replace an existing scenario file"),
    no_probe: bool = typer.Option(
        False, "--no-probe", help="skip the short federated run that picks the strategy (writes FedAvg)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the probes and of the written scenario"),
) -> None:
    """Inspect your model and data and write a commented scenario that `fedtiny run` accepts as is."""
    from fedtiny.init_scenario import write_scenario

    try:
        if out.exists() and not force:
            raise FedTinyError(f"{out}: exists; pass --force to replace it, or --out FILE")
        ins = write_scenario(model, data, out, seed=seed, probe=not no_probe, log=typer.echo)
    except FedTinyError as exc:
        _fail(exc)
    rec = ins.data
    devices = f"{len(set(rec.device.tolist()))} devices" if rec.device is not None else "no device ids"
    typer.echo(
        f"model: {ins.model.io.head_path}, input {ins.model.io.input_dtype} {list(ins.model.io.input_shape)}"
    )
    typer.echo(
        f"data:  {len(rec)} examples, {len(rec.classes)} classes, {devices}; front end {ins.front_end}"
    )
    typer.echo(f"wrote {out}; run it with: fedtiny run {out}")


def _interrupted_message(
    out_dir: Path, signum: int, summary_json: Mapping[str, object] | None, cut: bool = False
) -> str:
    """What an interrupted run wrote and how to continue it (one or two lines); ``cut``: the results were being
    written when the process was forced to end."""
    import signal

    from fedtiny.interrupt import SIGNAL_NAMES

    how = SIGNAL_NAMES.get(signal.Signals(signum), f"signal {signum}")
    if summary_json is not None:
        summary = as_summary(summary_json)
        head = (
            f"fedtiny: interrupted ({how}) after round {summary['rounds_done']} of {summary['rounds']}; "
            f'results of the rounds done in {out_dir} (summary.json: "complete": false)'
        )
    elif cut:
        head = (
            f"fedtiny: interrupted ({how}) while writing the results of the rounds done; some result files may be "
            f"incomplete, the checkpoint is not"
        )
    else:
        head = f"fedtiny: interrupted ({how}) before the first round finished; no results written"
    if (out_dir / "checkpoint" / "latest.json").is_file() and (out_dir / RESOLVED).is_file():
        return f"{head}\ncontinue with: fedtiny run --resume {out_dir}"
    import shlex

    again = sys.argv[1:] + ([] if "--force" in sys.argv else ["--force"])
    return f"{head}\nstart again with: fedtiny {shlex.join(again)}"


def _forced_stop(stop: StopSignal, prog: RoundProgress, out_dir: Path, signum: int) -> None:
    """A second Ctrl-C, or a stop that hangs: write what the last checkpoint holds, say how to resume."""
    with contextlib.suppress(Exception):  # the bar may be half-stopped already
        prog.stop()
    summary = None
    if stop.plan is not None and not stop.writing.is_set():
        from fedtiny.plan import RunPlan
        from fedtiny.runner import finish_interrupted

        try:
            assert isinstance(stop.plan, RunPlan)  # fedtiny.runner sets it
            summary = finish_interrupted(stop.plan)
        except Exception:  # best effort: the process ends now
            summary = None
    from fedtiny.model.quiet import write_console  # stderr may point at fedtiny.log (TensorFlow training)

    write_console(_interrupted_message(out_dir, signum, summary, cut=stop.writing.is_set()) + "\n")


@contextlib.contextmanager
def _log_to_file(path: Path, verbose: bool) -> Iterator[None]:
    """While the run lasts, Python logging and warnings of this process (TensorFlow, Flower, Ray) go to
    ``path``, or stay on the terminal with ``verbose``; the children's output goes to the same file
    (fedtiny.runtime.superlink). The loggers are restored afterwards (the CLI may run inside a test)."""
    import logging

    if verbose:  # TensorFlow's output too stays on the terminal (fedtiny.model.quiet reads this)
        os.environ["FEDTINY_VERBOSE"] = "1"
        yield
        return
    import flwr.common.logger  # noqa: F401  (installs Flower's console handler now, so it is replaced below)

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("", "flwr", "tensorflow", "absl", "ray", "py.warnings")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    logging.captureWarnings(True)
    try:
        for lg in loggers:
            lg.handlers[:] = [handler]
            lg.propagate = lg.name == "root"
        yield
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate in saved:
            lg.handlers[:] = handlers
            lg.propagate = propagate
        handler.close()


def _say(text: str) -> None:
    """A console line wrapped at 79 columns between words (never inside one, nor inside an option)."""
    import textwrap

    keep = text.replace("--set ", "--set\x00")  # an option and its value stay on one line
    wrapped = textwrap.fill(keep, 79, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    typer.echo(wrapped.replace("\x00", " "))


def _group_sizes(summary: Summary) -> str:
    """``groups: fleet 14, remounted 6 devices`` (the device groups of the drift events), or ""."""
    groups = summary.get("fleet_stats", {}).get("groups", {})
    if len(groups) < 2:
        return ""
    return "groups: " + ", ".join(f"{g} {n}" for g, n in groups.items()) + " devices"


@cli.command()
def keys(
    section: str | None = typer.Argument(None, help="only this section, e.g. fleet or drift"),
) -> None:
    """List every scenario key with its type, default, range or choices, and meaning."""
    from fedtiny.plan.keys import format_keys

    try:
        typer.echo(format_keys(section))
    except FedTinyError as exc:
        _fail(exc)


@cli.command()
def scenarios(
    directory: Path | None = typer.Argument(
        None, help="folder of scenario files (default: ./scenarios, else the source tree's)"
    ),
) -> None:
    """List the ready scenarios (scenarios/*.toml) with their first comment line."""
    from fedtiny.plan.keys import list_scenarios

    try:
        rows = list_scenarios(directory)
    except FedTinyError as exc:
        _fail(exc)
    width = max(len(str(p)) for p, _ in rows)
    for p, line in rows:
        typer.echo(f"{p!s:<{width}}  {line}")
    first = next((p for p, _ in rows if p.stem == "quickstart"), rows[0][0])
    typer.echo(f"\nrun one: fedtiny run {first}   (every key: fedtiny keys)")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FedTinyError(f"{path}: file not found")
    return path.read_bytes()


def _register_more() -> None:
    """Field-trial commands (emulate, serve, gateway) live in their own module."""
    from fedtiny.cli_link import register

    register(cli)


_register_more()


def main() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli()  # exits (click's standalone mode): SystemExit with the command's exit code


if __name__ == "__main__":
    main()
