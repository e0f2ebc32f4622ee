"""Field-trial commands: `fedtiny emulate`, `fedtiny serve`, `fedtiny gateway`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from fedtiny.errors import FedTinyError


def _fail(exc: BaseException) -> None:
    typer.echo(f"fedtiny: error: {exc}", err=True)
    raise typer.Exit(2)


def _key(path: Optional[Path]) -> bytes | None:
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
    state: Path = typer.Option(Path(tempfile.gettempdir()) / "fedtiny-board.flash", "--state", help="flash image file (A/B slots, metadata); default in the temp folder: give each board its own"),
    device_id: int = typer.Option(1, "--device-id"),
    fleet_key_file: Optional[Path] = typer.Option(None, "--fleet-key-file", help="per-fleet HMAC key, hex"),
    model: Optional[Path] = typer.Option(None, "--model", help="int8 .tflite the board runs in TFLite Micro "
                                         "(backbone for raw samples; its head is the factory head)"),
) -> None:
    """Start a virtual board (device emulator) speaking docs/protocol.md."""
    from clients.board import serve_board

    try:
        if model is not None and not model.is_file():
            raise FedTinyError(f"{model}: model file not found")
        serve_board(listen, str(state), device_id, _key(fleet_key_file), model=model.read_bytes() if model else None,
                    ready=lambda addr: typer.echo(f"virtual board {device_id} listening on {addr}"))
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
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(9091, "--port"),
    tls_dir: Optional[Path] = typer.Option(None, "--tls-dir", help="generate a CA + certificate here and serve TLS"),
    auth_keys: list[Path] = typer.Option([], "--auth-public-key", help="only SuperNodes with these keys (TLS only)"),
    set_: list[str] = typer.Option([], "--set", help="override a scenario key"),
) -> None:
    """Start a SuperLink and the ServerApp for a field trial; write results to --out."""
    from fedtiny.config import load_scenario
    from fedtiny.field.tls import make_tls
    from fedtiny.field.trial import Security, serve as serve_trial

    try:
        s = load_scenario(scenario, set_)
        if auth_keys and not tls_dir:
            raise FedTinyError("--auth-public-key needs --tls-dir (Flower authenticates SuperNodes over TLS only)")
        tls = make_tls(tls_dir, [host]) if tls_dir else None
        summary = serve_trial(s, out, gateways, host, port, Security(tls, tuple(auth_keys)), log=typer.echo)
    except FedTinyError as exc:
        _fail(exc)
    typer.echo(f"field trial done: {summary['rounds_completed']} rounds, accuracy on boards "
               f"{summary['initial_accuracy']} -> {summary['final_accuracy']}; results in {out}")


def gateway(
    superlink: str = typer.Option(..., "--superlink", help="SuperLink address HOST:PORT"),
    device: list[str] = typer.Option(..., "--device", help="board link URI (repeat): serial:///dev/ttyACM0, socket://..., ble://ADDR"),
    port: int = typer.Option(9094, "--port", help="this SuperNode's local port"),
    fleet_key_file: Optional[Path] = typer.Option(None, "--fleet-key-file", help="per-fleet HMAC key, hex"),
    replay: Optional[Path] = typer.Option(None, "--replay", help="replay directory (trial dir/replay) to push samples"),
    root_certificates: Optional[Path] = typer.Option(None, "--root-certificates", help="CA of a TLS SuperLink"),
    auth_key: Optional[Path] = typer.Option(None, "--auth-key", help="SuperNode private key (node authentication)"),
) -> None:
    """Start a SuperNode that serves the given boards as a gateway."""
    from fedtiny.field.trial import run_gateway

    try:
        key = _key(fleet_key_file)
        for path, what in ((replay, "replay directory"), (root_certificates, "CA file"), (auth_key, "key file")):
            if path is not None and not path.exists():
                raise FedTinyError(f"{path}: {what} not found")
        with tempfile.TemporaryDirectory(prefix="fedtiny-gateway-") as home:
            code = run_gateway(superlink, device, Path(home), port, key, replay, root_certificates, auth_key)
    except FedTinyError as exc:
        _fail(exc)
    raise typer.Exit(code)


def register(cli: typer.Typer) -> None:
    cli.command()(emulate)
    cli.command()(serve)
    cli.command()(gateway)
