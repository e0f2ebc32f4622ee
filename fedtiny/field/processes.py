"""Start and stop Flower's Deployment Engine processes (SuperLink, SuperNodes, `flwr run`) for a trial.

Every process gets its own FLWR_HOME (so the user's ~/.flwr stays untouched), telemetry off, and the venv's
bin first on PATH; each runs in its own process group so that stopping it also stops its children.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from fedtiny.errors import FedTinyError
from fedtiny.field.tls import TlsFiles

FEDERATION = "trial"
BIN = Path(sys.executable).parent


def flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def write_flwr_config(home: Path, address: str, ca: Path | None) -> None:
    """The `flwr` CLI's connection to our SuperLink; without it `flwr` would start a local one."""
    home.mkdir(parents=True, exist_ok=True)
    conn = f'root-certificates = "{ca.resolve()}"' if ca else "insecure = true"
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\naddress = "{address}"\n{conn}\n')


def _spawn(cmd: list[str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=flower_env(home), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start_superlink(home: Path, host: str, port: int, log: Path, tls: TlsFiles | None = None,
                    node_auth: bool = False, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    cmd = [str(BIN / "flower-superlink"), "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if tls:
        cmd += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
        if node_auth:
            cmd.append("--enable-supernode-auth")
    else:
        cmd.append("--insecure")
    proc = _spawn(cmd, home, log)
    ctx = ssl.create_default_context(cafile=str(tls.ca)) if tls else None
    url = f"{'https' if tls else 'http'}://{host}:{port}/health"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise FedTinyError(f"flower-superlink exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise FedTinyError(f"flower-superlink did not become healthy at {url} within {timeout:.0f} s; see {log}")


def start_supernode(home: Path, superlink: str, port: int, node_config: str, log: Path, ca: Path | None = None,
                    auth_key: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = [str(BIN / "flower-supernode"), "--superlink", superlink, "--port", str(port),
           "--node-config", node_config]
    cmd += ["--root-certificates", str(ca)] if ca else ["--insecure"]
    if auth_key:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return _spawn(cmd, home, log)


def flwr(home: Path, *args: str, timeout: float = 600.0) -> str:
    try:
        proc = subprocess.run([str(BIN / "flwr"), *args], env=flower_env(home), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FedTinyError(f"flwr {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise FedTinyError(f"flwr {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


def run_app(home: Path, app_dir: Path, run_config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`flwr run` (blocks until the run ends; it exits 0 even when the run failed), then the run's status."""
    cfg = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
    out = flwr(home, "run", str(app_dir), FEDERATION, "--run-config", cfg, "--format", "json", "--stream", timeout=timeout)
    run_id = _run_id(out)
    status = flwr(home, "ls", FEDERATION, "--run-id", str(run_id), "--format", "json", timeout=60)
    return {"run_id": run_id, "status": status, "completed": "completed" in status.lower()}


def _run_id(out: str) -> int:
    for line in out.splitlines()[::-1] + [out]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "run-id" in data:
            return int(data["run-id"])
    for token in out.replace(",", " ").split():
        if token.isdigit() and len(token) > 6:
            return int(token)
    raise FedTinyError(f"could not find the run id in `flwr run` output: {out[-300:]}")


def stop(*procs: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM each process group (the process and its children), then SIGKILL what is left."""
    for p in procs:
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        if p is None:
            continue
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        try:  # children (flower-superexec) that outlived the parent
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
