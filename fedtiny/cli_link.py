"""Field-trial commands: `fedtiny emulate`, `fedtiny serve`, `fedtiny gateway`, `fedtiny trial`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from fedtiny.errors import FedTinyError
from fedtiny.summary import FieldSummary, as_field_summary

if TYPE_CHECKING:
    from fedtiny import runlock
    from fedtiny.field.trial import TrialFailed
    from fedtiny.interrupt import StopSignal
    from fedtiny.report.progress import RoundProgress


def _fail(exc: BaseException, code: int = 2) -> NoReturn:
    typer.echo(f"fedtiny: error: {exc}", err=True)
    raise typer.Exit(code)


def _trial_failed(exc: TrialFailed) -> None:
    """A trial that ran and failed: its boards table (when there is one), then the reason in one line, exit 1."""
    from fedtiny.field.trial import format_boards

    if exc.summary:
        typer.echo(format_boards(exc.summary))
    _fail(exc, 1)


def _sigterm_exits() -> None:
    """SIGTERM unwinds like Ctrl-C, so that `finally` stops the child processes."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _lock(out: Path) -> runlock.RunLock:
    """OUT/fedtiny.lock (fedtiny.runlock): one trial or run at a time writes into a directory; refused in one
    line (exit 2) while its owner lives, a stale one taken over with one line."""
    from fedtiny import runlock

    try:
        if out.exists() and not out.is_dir():
            raise FedTinyError(f"{out}: exists and is not a directory; pass --out DIR for another one")
        out.mkdir(parents=True, exist_ok=True)
        return runlock.acquire(out, say=lambda line: typer.echo(line, err=True))
    except FedTinyError as exc:
        _fail(exc)


def _interrupted(out: Path, signum: int, summary_json: Mapping[str, object] | None) -> str:
    """What an interrupted trial wrote, and how to start it again (a field trial does not resume: the boards
    have moved on)."""
    import shlex

    from fedtiny.interrupt import SIGNAL_NAMES

    how = SIGNAL_NAMES.get(signal.Signals(signum), f"signal {signum}")
    summary = None if summary_json is None else as_field_summary(summary_json)
    if summary is not None and summary.get("rounds_completed", 0) >= 1:
        head = (
            f"fedtiny: interrupted ({how}) after round {summary['rounds_completed']} of {summary['rounds']}; "
            f'results of the rounds done in {out} (summary.json: "complete": false, report.html)'
        )
    else:
        head = f"fedtiny: interrupted ({how}) before the first round finished; no results written"
    return f"{head}\na field trial does not resume; start it again with: fedtiny {shlex.join(sys.argv[1:])}"


def _run_stoppable(
    out: Path, rounds: int, body: Callable[[RoundProgress, StopSignal], FieldSummary]
) -> FieldSummary:
    """Run ``body(prog, stop)`` (serve or trial) holding OUT's lock, with Ctrl-C/SIGTERM/SIGHUP stopping it in
    order (fedtiny.interrupt.StopSignal: the rounds stop, the results of the rounds done are written, every
    process ends; exit 130/143/129) and every process it starts dying with it however it dies
    (fedtiny.lifeline)."""
    from fedtiny import lifeline
    from fedtiny.field.trial import GatewaysMissing, TrialFailed
    from fedtiny.interrupt import RunInterrupted, StopSignal, kill_children
    from fedtiny.report.progress import RoundProgress

    lock = _lock(out)
    lifeline.guard()
    prog = RoundProgress(rounds)

    said = threading.Lock()  # the "interrupted" lines once, whether the stop ends in order or is forced

    def forced(signum: int) -> None:  # a second Ctrl-C, or a stop that hangs
        with contextlib.suppress(Exception):
            prog.stop()
        if said.acquire(blocking=False):
            sys.stderr.write(_interrupted(out, signum, _summary(out)) + "\n")

    stop = StopSignal(grace_s=15.0, on_force=forced)
    stop.before_exit.append(lock.release)
    try:
        with stop, prog:
            summary = body(prog, stop)
    except RunInterrupted as exc:
        if said.acquire(blocking=False):
            with contextlib.suppress(OSError):  # stderr may be a closed terminal (SIGHUP)
                typer.echo(_interrupted(out, exc.signum, exc.summary or _summary(out)), err=True)
        kill_children(stop.started)
        lock.release()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.exit_code)
    except GatewaysMissing as exc:
        lock.release()
        _fail(exc, 2)
    except TrialFailed as exc:
        lock.release()
        _trial_failed(exc)
    except FedTinyError as exc:
        lock.release()
        _fail(exc, 1)
    lock.release()
    return summary


def _summary(out: Path) -> FieldSummary | None:
    import json

    try:
        summary: FieldSummary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("complete") is False else None


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    if not path.is_file():
        raise FedTinyError(f"{path}: fleet key file not found")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise FedTinyError(f"{path}: expected the fleet key as hex") from None
    if len(key) < 16:
        raise FedTinyError(f"{path}: fleet key must be at least 16 bytes")
    return key


def emulate(
    listen: str = typer.Option("socket://127.0.0.1:7777", "--listen", help="socket://HOST:PORT or pty"),
    state: Path = typer.Option(
        Path(tempfile.gettempdir()) / "fedtiny-board.flash",
        "--state",
        help="flash image file (A/B slots, metadata); default in the temp folder: give each board its own",
    ),
    device_id: int = typer.Option(1, "--device-id", help="the device id the board reports in HELLO (u32)"),
    fleet_key_file: Path | None = typer.Option(None, "--fleet-key-file", help="per-fleet HMAC key, hex"),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="int8 .tflite the board runs in TFLite Micro "
        "(backbone for raw samples; its head is the factory head)",
    ),
    trust_key: list[Path] = typer.Option(
        [],
        "--trust-key",
        help="Ed25519 public key (PEM) the board trusts (repeat, 1-4): it then accepts only signed images; "
        "provisioned on a blank flash, later changed by signed KEY_CHANGE messages",
    ),
    device_key_file: Path | None = typer.Option(
        None, "--device-key-file", help="this board's own update key, hex (fedtiny key device)"
    ),
) -> None:
    """Start a virtual board (device emulator) speaking docs/protocol.md."""
    from fedtiny.clients.board import BoardConfig, serve_board
    from fedtiny.field.trial import wait_for_trial_file
    from fedtiny.link.signing import MAX_TRUSTED_KEYS, load_public_key, read_hex_key

    try:
        if len(trust_key) > MAX_TRUSTED_KEYS:
            raise FedTinyError(f"--trust-key: a board holds at most {MAX_TRUSTED_KEYS} public keys")
        cfg = BoardConfig(
            trust_keys=tuple(load_public_key(p) for p in trust_key),
            device_key=read_hex_key(device_key_file, "device update key", exact=32)
            if device_key_file
            else None,
        )
        if model is not None:  # `fedtiny serve` may still be writing it (the README starts both at once)
            wait_for_trial_file(model, "model file", log=typer.echo)
            if not model.is_file():
                raise FedTinyError(f"{model}: model file not found")
        serve_board(
            listen,
            str(state),
            device_id,
            _key(fleet_key_file),
            model=model.read_bytes() if model else None,
            ready=lambda addr: typer.echo(f"virtual board {device_id} listening on {addr}"),
            cfg=cfg,
        )
    except FedTinyError as exc:
        _fail(exc)
    except (OSError, ValueError) as exc:  # port in use, bad address: one line, not a traceback
        _fail(FedTinyError(f"cannot listen on {listen}: {exc}"))
    except KeyboardInterrupt:
        pass


def serve(
    scenario: Path = typer.Argument(..., help="scenario TOML file"),
    out: Path = typer.Option(Path("runs/field"), "--out", help="trial directory"),
    gateways: int = typer.Option(1, "--gateways", help="gateways (SuperNodes) to wait for"),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address the server listens on (0.0.0.0: every interface)"
    ),
    port: int = typer.Option(9091, "--port", help="port the gateways (SuperNodes) connect to"),
    tls_dir: Path | None = typer.Option(
        None, "--tls-dir", help="generate a CA + certificate here and serve TLS"
    ),
    auth_keys: list[Path] = typer.Option(
        [], "--auth-public-key", help="only SuperNodes with these keys (TLS only)"
    ),
    signing_key: Path | None = typer.Option(
        None,
        "--signing-key",
        help="Ed25519 private key (PEM): sign every redeployed head here, with a rising security counter",
    ),
    wait_s: float = typer.Option(
        300.0,
        "--wait-s",
        help="seconds the gateways have to connect (prints k of N as they join); then exit 2 with the command "
        "a gateway runs",
    ),
    set_: list[str] = typer.Option([], "--set", help="override a scenario key"),
) -> None:
    """Field trial server: prepare --out (base model, replay data), start a SuperLink, run the rounds with the
    gateways that connect, print progress and a table of boards; results and report.html in --out. Ctrl-C or
    SIGTERM: the rounds stop, the results of the rounds done are written ("complete": false), every process
    ends. One serve or trial at a time per --out."""
    from fedtiny.field.tls import make_tls
    from fedtiny.field.trial import Security
    from fedtiny.field.trial import serve as serve_trial
    from fedtiny.plan import load_scenario

    try:
        s = load_scenario(scenario, set_)
        if auth_keys and not tls_dir:
            raise FedTinyError(
                "--auth-public-key needs --tls-dir (Flower authenticates SuperNodes over TLS only)"
            )
        tls = make_tls(tls_dir, [host]) if tls_dir else None
        if signing_key is not None:
            from fedtiny.link.signing import load_private_key

            load_private_key(signing_key)  # a bad key is refused now, not in the ServerApp
        if wait_s <= 0:
            raise FedTinyError(f"--wait-s must be > 0 (got {wait_s})")
        if gateways < 1:
            raise FedTinyError(f"--gateways must be >= 1 (got {gateways})")
    except FedTinyError as exc:
        _fail(exc)
    summary = _run_stoppable(
        out,
        s.rounds,
        lambda prog, stop: serve_trial(
            s,
            out,
            gateways,
            host,
            port,
            Security(tls, tuple(auth_keys), signing_key),
            log=prog.log,
            progress=prog.update,
            wait_s=wait_s,
            stop=stop,
        ),
    )
    _done(summary, out)


def _done(summary: FieldSummary, out: Path) -> None:
    from fedtiny.field.trial import format_boards, signing_line

    typer.echo(format_boards(summary))
    if signing_line(summary):
        typer.echo(signing_line(summary))
    acc = [summary["initial_accuracy"], summary["final_accuracy"]]
    accs = " -> ".join("n/a" if a is None else f"{100 * a:.1f}%" for a in acc)
    typer.echo(
        f"field trial done: {summary['rounds_completed']} rounds, accuracy on the boards {accs}, "
        f"{summary['updates_aggregated']} updates aggregated, {summary['board_failures']} board failure(s); "
        f"results in {out} (report.html)"
    )


def gateway(
    superlink: str = typer.Option(..., "--superlink", help="SuperLink address HOST:PORT"),
    device: list[str] = typer.Option(
        ..., "--device", help="board link URI (repeat): serial:///dev/ttyACM0, socket://..., ble://ADDR"
    ),
    port: int = typer.Option(9094, "--port", help="this SuperNode's local port"),
    fleet_key_file: Path | None = typer.Option(None, "--fleet-key-file", help="per-fleet HMAC key, hex"),
    replay: Path | None = typer.Option(
        None, "--replay", help="replay directory (trial dir/replay) to push samples"
    ),
    root_certificates: Path | None = typer.Option(None, "--root-certificates", help="CA of a TLS SuperLink"),
    auth_key: Path | None = typer.Option(
        None, "--auth-key", help="SuperNode private key (node authentication)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="gateway directory: logs, Flower state, events "
        "(default: TRIAL_DIR/gateway-PORT with --replay, else runs/gateway-PORT)",
    ),
    signing_key: Path | None = typer.Option(
        None, "--signing-key", help="Ed25519 private key (PEM): deploy heads as signed MCUboot images"
    ),
    update_master_file: Path | None = typer.Option(
        None,
        "--update-master-file",
        help="master secret of the per-device update keys, hex: check each board's update with its own key",
    ),
) -> None:
    """Start a SuperNode that serves the given boards as a gateway; prints the boards and each round's outcome
    per board, and stops when the trial ends."""
    import os

    from fedtiny.field.trial import run_gateway
    from fedtiny.link.signing import load_private_key, read_hex_key

    _sigterm_exits()
    try:
        if (
            signing_key is not None
        ):  # checked here; the SuperNode's ClientApp reads the file (path in its env)
            load_private_key(signing_key)
            os.environ["FEDTINY_SIGNING_KEY"] = str(signing_key.resolve())
        if update_master_file is not None:
            read_hex_key(update_master_file, "update master secret")
            os.environ["FEDTINY_UPDATE_MASTER_FILE"] = str(update_master_file.resolve())
        key = _key(fleet_key_file)
        for path, what in ((root_certificates, "CA file"), (auth_key, "key file")):
            if path is not None and not path.exists():
                raise FedTinyError(f"{path}: {what} not found")
        gw_dir = out or ((replay.parent if replay else Path("runs")) / f"gateway-{port}")
        code = run_gateway(
            superlink, device, gw_dir, port, key, replay, root_certificates, auth_key, log=typer.echo
        )
    except FedTinyError as exc:
        _fail(exc, 1)
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def trial(
    scenario: Path = typer.Argument(..., help="scenario TOML file"),
    boards: int = typer.Option(
        ...,
        "--boards",
        help="virtual boards started (device ids 1..N), each replaying one device: with recorded data "
        "(data.path) the first N devices of the data, otherwise N synthetic devices (fleet.devices = N)",
    ),
    out: Path = typer.Option(
        Path("runs/trial"), "--out", help="trial directory (results, logs, board flash)"
    ),
    gateways: int = typer.Option(1, "--gateways", help="gateways; boards are dealt round-robin"),
    signed: bool = typer.Option(
        False,
        "--signed",
        help="boards trust only a fresh Ed25519 key (OUT/keys); the server signs every head",
    ),
    set_: list[str] = typer.Option([], "--set", help="override a scenario key"),
) -> None:
    """A whole field trial on this machine: serve + N virtual boards + gateway(s) on loopback, progress, a table
    of boards, results and report.html in --out; every process stopped at the end (exit 0 on success). Ctrl-C
    or SIGTERM: the rounds stop, the results of the rounds done are written ("complete": false), every process
    ends. One trial at a time per --out."""
    from fedtiny.field.trial import run_trial
    from fedtiny.plan import load_scenario

    try:
        s = load_scenario(scenario, [*set_, f"fleet.devices={boards}"])
        if boards < 1 or not 1 <= gateways <= boards:
            raise FedTinyError(
                f"--boards must be >= 1 and --gateways between 1 and --boards (got {boards}, {gateways})"
            )
    except FedTinyError as exc:
        _fail(exc)
    summary = _run_stoppable(
        out,
        s.rounds,
        lambda prog, stop: run_trial(
            s, boards, out, gateways, log=prog.log, progress=prog.update, signed=signed, stop=stop
        ),
    )
    _done(summary, out)


keys_app = typer.Typer(
    help="Ed25519 signing keys, per-device update keys and key changes (docs/protocol.md §7).",
    no_args_is_help=True,
)


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(
        ..., "--out", help="directory for signing.pem, signing.pub.pem, update-master.key"
    ),
) -> None:
    """Generate an Ed25519 signing key (signing.pem: keep it on the signing host; signing.pub.pem: for the boards,
    `fedtiny emulate --trust-key`) and the fleet master secret of the per-device update keys (update-master.key)."""
    from fedtiny.link.signing import key_hash, load_public_key, write_keys

    try:
        paths = write_keys(out)
    except FedTinyError as exc:
        _fail(exc)
    kh = key_hash(load_public_key(paths["public"])).hex()
    typer.echo(f"wrote {paths['private']} (private), {paths['public']} (key hash {kh}), {paths['master']}")


@keys_app.command("device")
def keys_device(
    master: Path = typer.Option(..., "--master", help="update-master.key (hex)"),
    device_id: int = typer.Option(
        ..., "--device-id", help="the board's device id (u32, as its HELLO reports)"
    ),
    out: Path = typer.Option(..., "--out", help="file for this board's update key (hex)"),
) -> None:
    """Derive one board's update key (HKDF-SHA256 of the master and the device id) to provision it."""
    from fedtiny.link.signing import device_key, read_hex_key

    try:
        if not 0 <= device_id < 2**32:
            raise FedTinyError(f"--device-id {device_id}: a u32")
        out.write_text(device_key(read_hex_key(master, "update master secret"), device_id).hex() + "\n")
        out.chmod(0o600)
    except FedTinyError as exc:
        _fail(exc)
    typer.echo(f"wrote the update key of device {device_id} to {out}")


@keys_app.command("change")
def keys_change(
    device: str = typer.Argument(
        ..., help="board link URI (socket://..., serial:///dev/ttyACM0, ble://ADDR)"
    ),
    signing_key: Path = typer.Option(..., "--signing-key", help="a key the board trusts now (PEM)"),
    add: Path | None = typer.Option(None, "--add", help="public key (PEM) to add"),
    retire: Path | None = typer.Option(None, "--retire", help="public key (PEM) to retire"),
    counter: int | None = typer.Option(None, "--counter", help="key counter (default: the board's + 1)"),
    any_device: bool = typer.Option(False, "--any-device", help="sign for every board (device id 0)"),
) -> None:
    """Add or retire one trusted public key on a board with a signed KEY_CHANGE message."""
    from fedtiny.link.session import BoardSession
    from fedtiny.link.signing import KEY_ADD, KEY_RETIRE, KeyChange, load_private_key, load_public_key
    from fedtiny.link.transport import open_transport

    try:
        if (add is None) == (retire is None):
            raise FedTinyError("give exactly one of --add PUB or --retire PUB")
        key = load_private_key(signing_key)
        pub = load_public_key(add or retire)  # type: ignore[arg-type]
        s = BoardSession(open_transport(device))
        try:
            info = s.hello()
            n = counter if counter is not None else s.keys().counter + 1
            kc = KeyChange(KEY_ADD if add else KEY_RETIRE, 0 if any_device else info.device_id, n, pub).sign(
                key
            )
            ks = s.key_change(kc)
        finally:
            s.close()
    except FedTinyError as exc:
        _fail(exc, 1)
    typer.echo(
        f"board {info.device_id}: key counter {ks.counter}, trusts {len(ks.hashes)} key(s): "
        + ", ".join(h.hex()[:16] for h in ks.hashes)
    )


def sign(
    image: Path = typer.Argument(..., help="image to sign: a head patch (GET_HEAD bytes) or an int8 .tflite"),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM, fedtiny key generate)"),
    out: Path = typer.Option(
        ..., "--out", help="signed MCUboot image (imgtool verify -k KEY.pem OUT accepts it)"
    ),
    security_counter: int = typer.Option(0, "--security-counter", help="anti-rollback counter (u32)"),
    version: str = typer.Option("0.0.0", "--version", help="image version MAJOR.MINOR.REVISION+BUILD"),
) -> None:
    """Sign an image with Ed25519 in MCUboot's format (SHA-256, key hash, signature, security counter TLVs)."""
    from fedtiny.link.signing import load_private_key, parse_version, sign_image

    try:
        if not image.is_file():
            raise FedTinyError(f"{image}: image file not found")
        signed = sign_image(
            image.read_bytes(), load_private_key(key), security_counter, parse_version(version)
        )
        out.write_bytes(signed)
    except FedTinyError as exc:
        _fail(exc)
    typer.echo(f"wrote {out} ({len(signed)} bytes, security counter {security_counter}, version {version})")


def register(cli: typer.Typer) -> None:
    cli.add_typer(keys_app, name="key")  # `fedtiny keys` lists the scenario keys
    cli.command()(sign)
    cli.command()(emulate)
    cli.command()(serve)
    cli.command()(gateway)
    cli.command()(trial)
