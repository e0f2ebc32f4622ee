"""Start and stop Flower's Deployment Engine processes (SuperLink, SuperNodes, `flwr run`) for a trial.

Every process gets its own FLWR_HOME (so the user's ~/.flwr stays untouched), telemetry off, and the venv's
bin first on PATH; each runs in its own process group so that stopping it also stops its children. Each dies
with the process that started it, whatever kills that one, and so does everything it started
(:mod:`fedtiny.lifeline`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NotRequired, TypedDict

from fedtiny import lifeline
from fedtiny.errors import FedTinyError
from fedtiny.field.tls import TlsFiles

FEDERATION = "trial"
BIN = Path(sys.executable).parent
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


#: a value of ``--node-config``/``--run-config``
ConfigValue = str | int | float | bool


class RunResult(TypedDict):
    """How `flwr run` ended (:func:`run_app`): its run id, the status `flwr ls` reports, whether it completed;
    ``stopped``: a stop was asked for (no status asked)."""

    run_id: int
    status: str
    completed: bool
    stopped: NotRequired[bool]


def toml_string(value: str, what: str = "value") -> str:
    """A string as Flower's ``--node-config``/``--run-config`` parser reads it: always quoted (an unquoted
    value is parsed as a TOML number/bool and fails), single quotes unless the value holds one."""
    if "\n" in value or ("'" in value and '"' in value):
        raise FedTinyError(
            f"{what} {value!r} cannot be passed to Flower: it holds a newline or both quote kinds"
        )
    return f"'{value}'" if "'" not in value else json.dumps(value)


def config_args(values: Mapping[str, ConfigValue]) -> str:
    """``key=value ...`` for ``--node-config``/``--run-config``: strings quoted, numbers and bools as TOML."""
    parts = []
    for k, v in values.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            parts.append(f"{k}={v!r}")
        else:
            parts.append(f"{k}={toml_string(str(v), k)}")
    return " ".join(parts)


def log_tail(log: Path) -> str:
    """The last meaningful line of a child's log (ANSI colours stripped), for a one-line error."""
    try:
        lines = [_ANSI.sub("", ln).strip() for ln in log.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith(("INFO", "DEBUG"))] or [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def exited(name: str, proc: subprocess.Popen[bytes], log: Path) -> FedTinyError:
    """``NAME exited with code N: <last log line>; log: PATH`` (one line)."""
    tail = log_tail(log)
    return FedTinyError(f"{name} exited with code {proc.returncode}{': ' + tail if tail else ''}; log: {log}")


def flower_env(home: Path) -> dict[str, str]:
    lifeline.guard()  # every child carries the lifeline's mark: it dies with this process (fedtiny.lifeline)
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def write_flwr_config(home: Path, address: str, ca: Path | None) -> None:
    """The `flwr` CLI's connection to our SuperLink; without it `flwr` would start a local one."""
    home.mkdir(parents=True, exist_ok=True)
    conn = f'root-certificates = "{ca.resolve()}"' if ca else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\naddress = "{address}"\n{conn}\n'
    )


def _spawn(cmd: list[str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd,
            env=flower_env(home),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lifeline.pdeathsig(),  # SIGKILL when this process dies
        )


def start_superlink(
    home: Path,
    host: str,
    port: int,
    log: Path,
    tls: TlsFiles | None = None,
    node_auth: bool = False,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if tls:
        cmd += [
            "--ssl-ca-certfile",
            str(tls.ca),
            "--ssl-certfile",
            str(tls.cert),
            "--ssl-keyfile",
            str(tls.key),
        ]
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
            raise exited("flower-superlink", proc, log)
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise FedTinyError(f"flower-superlink did not become healthy at {url} within {timeout:.0f} s; log: {log}")


def start_supernode(
    home: Path,
    superlink: str,
    port: int,
    node_config: str,
    log: Path,
    ca: Path | None = None,
    auth_key: Path | None = None,
) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "flower-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    cmd += ["--root-certificates", str(ca)] if ca else ["--insecure"]
    if auth_key:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return _spawn(cmd, home, log)


def flwr(home: Path, *args: str, timeout: float = 600.0) -> str:
    try:
        proc = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=flower_env(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=lifeline.pdeathsig(),
        )
    except subprocess.TimeoutExpired:
        raise FedTinyError(f"flwr {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        out = _ANSI.sub("", (proc.stderr or proc.stdout).strip()).splitlines()
        raise FedTinyError(
            f"flwr {' '.join(args[:2])} failed (exit {proc.returncode}): {out[-1][:300] if out else ''}"
        )
    return proc.stdout


def run_app(
    home: Path,
    app_dir: Path,
    run_config: Mapping[str, ConfigValue],
    timeout: float,
    log: Path,
    tick: Callable[[], None] = lambda: None,
    stopped: Callable[[], bool] = lambda: False,
) -> RunResult:
    """`flwr run --stream` (its output, the ServerApp's logs included, goes to ``log``), calling ``tick`` about
    ten times a second while it runs (it may raise to abort the run); then the run's status (`flwr run` exits 0
    even when the run failed). ``stopped()`` true once it ends: a stop was asked for (Ctrl-C), the ServerApp
    ended its rounds early; no status is asked for (``{"stopped": True}``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "flwr"),
        "run",
        str(app_dir),
        FEDERATION,
        "--run-config",
        config_args(run_config),
        "--format",
        "json",
        "--stream",
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            env=flower_env(home),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lifeline.pdeathsig(),  # SIGKILL when this process dies
        )
    deadline = time.time() + timeout
    try:
        while proc.poll() is None:
            if time.time() > deadline:
                raise FedTinyError(f"flwr run did not finish within {timeout:.0f} s; log: {log}")
            tick()
            time.sleep(0.1)
        tick()
    finally:
        stop(proc)
    if stopped():
        return {"run_id": 0, "status": "", "completed": False, "stopped": True}
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise exited("flwr run", proc, log)
    m = re.search(r'"success"\s*:\s*false.*?"error-message"\s*:\s*("(?:[^"\\]|\\.)*")', text, re.DOTALL)
    if m:
        msg = [ln for ln in json.loads(m.group(1)).splitlines() if ln.strip()]
        raise FedTinyError(f"flwr run failed: {msg[-1] if msg else 'no reason given'}; log: {log}")
    run_id = _run_id(text)
    status = flwr(home, "ls", FEDERATION, "--run-id", str(run_id), "--format", "json", timeout=60)
    return {"run_id": run_id, "status": status, "completed": "completed" in status.lower()}


def _run_id(out: str) -> int:
    m = re.search(r'"run-id"\s*:\s*"?(\d+)', out) or re.search(
        r"run(?:[ -]id)?[: ]+(\d{6,})", out, re.IGNORECASE
    )
    if m:
        return int(m.group(1))
    raise FedTinyError(f"could not find the run id in `flwr run` output: {_ANSI.sub('', out)[-300:]}")


def stop(*procs: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM each process group (the process and its children), then SIGKILL what is left; then every
    process each had started (Flower's SuperLink starts SuperExec and `flwr-serverapp` in sessions of their
    own: a signal to its group does not reach them)."""
    from fedtiny.interrupt import kill_processes, process_tree

    tree = {q for p in procs if p is not None and p.poll() is None for q in process_tree(p.pid)}
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
    kill_processes(tree, wait_s=2.0)
