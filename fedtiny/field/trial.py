"""`fedtiny serve` and `fedtiny gateway` as library functions."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fedtiny.config import Scenario
from fedtiny.errors import FedTinyError
from fedtiny.field import processes as fp
from fedtiny.field.replay import prepare_trial
from fedtiny.field.tls import TlsFiles

APP_DIR = Path(__file__).resolve().parent / "flwr_app"


@dataclass(frozen=True)
class Security:
    """TLS for the SuperLink (CA, certificate, key) and, optionally, SuperNode authentication."""

    tls: TlsFiles | None = None
    node_public_keys: tuple[Path, ...] = ()


def serve(s: Scenario, out: Path, gateways: int, host: str = "127.0.0.1", port: int = 9091,
          security: Security = Security(), log: Callable[[str], Any] = print,
          on_ready: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prepare the trial, start a SuperLink, run the field-trial ServerApp until it ends, stop the SuperLink."""
    out = out.resolve()
    prepare_trial(s, out, log)
    home = out / "flwr-home"
    address = f"{host}:{port}"
    fp.write_flwr_config(home, address, security.tls.ca if security.tls else None)
    link = fp.start_superlink(home, host, port, out / "logs" / "superlink.log", security.tls,
                              node_auth=bool(security.node_public_keys))
    try:
        for pub in security.node_public_keys:
            fp.flwr(home, "supernode", "register", str(pub), fp.FEDERATION)
        log(f"SuperLink ready at {address}{' (TLS)' if security.tls else ''}; waiting for {gateways} gateway(s)")
        if on_ready:
            on_ready(address)
        # generous: a field round over slow links can take minutes; the ServerApp has its own timeouts
        result = fp.run_app(home, APP_DIR, {"out-dir": str(out), "gateways": gateways}, timeout=600.0 + 600.0 * s.rounds)
    finally:
        fp.stop(link)
    summary_file = out / "summary.json"
    if not summary_file.exists():
        raise FedTinyError(f"the field trial ended without results (run {result['run_id']}); see {out / 'logs'}")
    summary: dict[str, Any] = json.loads(summary_file.read_text())
    if summary["rounds_completed"] != s.rounds or not result["completed"]:
        raise FedTinyError(f"the field trial stopped after {summary['rounds_completed']} of {s.rounds} rounds "
                           f"(run {result['run_id']}); see {out / 'logs'} and {summary_file}")
    return summary


def node_config(devices: list[str], fleet_key: bytes | None, replay: Path | None) -> str:
    parts = [f"devices={shlex.quote(' '.join(devices))}"]
    if fleet_key:
        parts.append(f"fleet-key='{fleet_key.hex()}'")
    if replay:
        parts.append(f"replay='{replay.resolve()}'")
    return " ".join(parts).replace('"', "'")


def start_gateway(superlink: str, devices: list[str], home: Path, port: int, fleet_key: bytes | None = None,
                  replay: Path | None = None, ca: Path | None = None, auth_key: Path | None = None) -> Any:
    """Start a SuperNode whose ClientApp drives ``devices``; returns the process (stop with processes.stop)."""
    if not devices:
        raise FedTinyError("a gateway needs at least one --device URI")
    return fp.start_supernode(home, superlink, port, node_config(devices, fleet_key, replay),
                              home / "logs" / f"supernode-{port}.log", ca, auth_key)


def run_gateway(*args: Any, **kwargs: Any) -> int:
    """Foreground `fedtiny gateway`: run until the SuperNode exits, Ctrl-C or SIGTERM (stops its children)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    proc = start_gateway(*args, **kwargs)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
        return int(proc.returncode)
    except KeyboardInterrupt:
        return 0
    finally:
        fp.stop(proc)
