"""The ``fedtiny`` command: a thin Typer layer over library functions. Errors print one line, exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from fedtiny.errors import FedTinyError

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Federated on-device learning for int8 TinyML models.")


def _fail(exc: BaseException) -> None:
    typer.echo(f"fedtiny: error: {exc}", err=True)
    raise typer.Exit(2)


@cli.command()
def run(
    scenario: Optional[Path] = typer.Argument(None, help="scenario TOML file (not needed with --resume)"),
    out: Optional[Path] = typer.Option(None, "--out", help="results directory (default: output.dir of the scenario)"),
    set_: list[str] = typer.Option([], "--set", help="override a key, e.g. --set rounds=50 --set fleet.devices=100"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the killed run in this results directory"),
    ray_address: str = typer.Option("", "--ray-address", help="run on an existing Ray cluster (default: $RAY_ADDRESS or a local Ray)"),
) -> None:
    """Run a scenario on Flower's Simulation Engine and write results."""
    from fedtiny.config import load_scenario

    try:
        if resume is not None:
            # a resumed run must be the run that was started: same scenario, no overrides
            if scenario is not None or set_:
                raise FedTinyError("--resume continues the run recorded in DIR/scenario.resolved.toml; "
                                   "give no scenario file and no --set with it")
            resolved = resume / "scenario.resolved.toml"
            if not resolved.is_file():
                raise FedTinyError(f"{resume}: not a results directory (no scenario.resolved.toml); nothing to resume")
            s = load_scenario(resolved)
        elif scenario is None:
            raise FedTinyError("missing scenario file (or --resume DIR)")
        else:
            s = load_scenario(scenario, set_)
    except FedTinyError as exc:
        _fail(exc)
    out_dir = resume or out or Path(s.output.dir.format(name=s.name))
    from fedtiny.report.progress import RoundProgress
    from fedtiny.runner import run_scenario

    try:
        with RoundProgress(s.rounds) as prog:
            summary = run_scenario(s, out_dir, log=prog.log, progress=prog.update, resume=resume is not None,
                                   ray_address=ray_address)
    except (FedTinyError, RuntimeError) as exc:  # RuntimeError: Flower/Ray failures, reported in one line
        _fail(exc)
    typer.echo(
        f"done: accuracy on the devices' data {100 * summary['initial_accuracy']:.1f}% -> "
        f"{100 * summary['final_accuracy']:.1f}% in {summary['rounds']} rounds ({summary['wall_seconds']} s); results in {out_dir}"
    )
    if summary.get("comparison") and any("pre_drift" in r for r in summary["comparison"]):
        from fedtiny.report.drift import format_table

        typer.echo(format_table(summary["comparison"]))


@cli.command()
def info(model: Path = typer.Argument(..., help=".tflite model")) -> None:
    """Print a model's ops, size, head shape and tensor arena."""
    from fedtiny.model.info import model_info

    try:
        data = _read(model)
        for line in model_info(data).lines():
            typer.echo(line)
    except FedTinyError as exc:
        _fail(exc)


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
        _fail(exc)
    typer.echo(f"wrote {path}")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FedTinyError(f"{path}: file not found")
    return path.read_bytes()


def _register_more() -> None:
    """Field-trial commands (emulate, serve, gateway) live in their own module."""
    from fedtiny.cli_link import register

    register(cli)


_register_more()


def main() -> Any:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return cli()


if __name__ == "__main__":
    sys.exit(main())
