"""`fedtiny run` on Flower's supported simulation runtime: a private simulation SuperLink driven by `flwr run`.

:class:`SimulationRuntime` starts ``flower-superlink --simulation --isolation subprocess`` (its own FLWR_HOME
in the run directory, a free loopback port, telemetry and update checks off, no dependency re-install),
submits fedtiny's Flower App with ``flwr run`` (scenario, out dir, resume flag and seed in ``--run-config``;
one SuperNode per gateway and the client resources in ``--federation-config``), follows the ServerApp's
per-round records (:mod:`fedtiny.runtime.channel`) for the progress bar, asks ``flwr list`` for the run's end
state, and stops every process it started (``flwr stop``, then the SuperLink's process group and whatever it
spawned) at the end, on an error and on Ctrl-C/SIGTERM/SIGHUP. A hard kill of the driver (SIGKILL, of it alone
or of its process group) ends them too: :mod:`fedtiny.lifeline`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypedDict, cast

import psutil

import fedtiny
from fedtiny import lifeline
from fedtiny.errors import FedTinyError
from fedtiny.interrupt import StopSignal
from fedtiny.runtime import channel
from fedtiny.runtime.ray_env import HOOK

BIN = Path(sys.executable).parent
CONNECTION = "fedtiny"
#: the Flower App the driver submits: the same components and config keys as ``[tool.flwr.app]`` in the
#: source tree's pyproject.toml (``flwr run .``); its code comes from the installed fedtiny
APP_PYPROJECT = """\
[project]
name = "fedtiny"
version = "{version}"
dependencies = []

[tool.flwr.app]
publisher = "fedtiny"

[tool.flwr.app.components]
serverapp = "fedtiny.runtime.serverapp:app"
clientapp = "fedtiny.runtime.clientapp:app"

[tool.flwr.app.config]
scenario = ""
out-dir = ""
resume = false
seed = -1
prepared = false
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
Progress = Callable[[channel.RoundRecord], None]


def _is_simulation(p: psutil.Process) -> bool:
    try:
        return any("flwr-simulation" in arg for arg in p.cmdline())
    except psutil.Error:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote(value: str) -> str:
    """A string as Flower's ``--run-config`` parser (TOML) reads it."""
    return json.dumps(value)


#: what fedtiny reads of `flwr ... --format json`
FlwrReply = TypedDict(
    "FlwrReply",
    {"success": bool, "error-message": str, "run-id": int | str, "runs": list[dict[str, object]]},
    total=False,
)


class SimulationRuntime:
    """One run on a private simulation SuperLink. ``stop`` is a :class:`fedtiny.interrupt.StopSignal` (or None).

    Output of the SuperLink, `flwr` and the simulation process (Flower, Ray, TensorFlow) goes to
    ``RUN_DIR/fedtiny.log``, or to the terminal with ``verbose``.
    """

    def __init__(
        self,
        out_dir: Path,
        gateways: int,
        cpus_per_gateway: float,
        ray_address: str = "",
        verbose: bool = False,
        stop: StopSignal | None = None,
    ) -> None:
        self.out_dir = out_dir.resolve()
        self.gateways = gateways
        self.cpus_per_gateway = cpus_per_gateway
        self.ray_address = ray_address
        self.verbose = verbose
        self.stop = stop
        self.rt_dir = channel.runtime_dir(self.out_dir)
        self.home = self.rt_dir / "flwr_home"
        self.app_dir = self.rt_dir / "app"
        self.log_path = self.out_dir / channel.LOG
        self.superlink: subprocess.Popen[bytes] | None = None
        self.run_id = 0
        self.reader: channel.Reader | None = None  # the ServerApp's records, once the run is followed
        self.seen: set[psutil.Process] = set()  # every process the SuperLink spawned (pid and start time)

    # -- environment -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Every child's environment: private FLWR_HOME, telemetry/update check off, Ray's worker hook, and the
        lifeline's mark (:mod:`fedtiny.lifeline`: whatever they start dies with this process)."""
        lifeline.guard()
        env = dict(os.environ)
        src = str(Path(fedtiny.__file__).resolve().parent.parent)  # the source tree holding fedtiny/
        site = str(Path(__file__).resolve().parent / "site")  # sitecustomize: TensorFlow blocked
        env.update(
            FLWR_HOME=str(self.home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(p for p in (site, src, env.get("PYTHONPATH", "")) if p),
            FEDTINY_NO_TENSORFLOW="1",
            RAY_RUNTIME_ENV_HOOK=HOOK,
            RAY_DEDUP_LOGS="0",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_DISABLE_FAILURE_SIGNAL_HANDLER="1",
            RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
            TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        )
        env.pop("RAY_ADDRESS", None)
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address  # Ray's own way to an existing cluster
        return env

    def _output(self) -> IO[bytes] | None:
        """Where a child writes: the run's log (append), or the terminal (None) with ``verbose``."""
        return None if self.verbose else self.log_path.open("ab")

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        out = self._output()
        try:
            return subprocess.Popen(
                cmd,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C reaches the driver only: it stops them in order
                preexec_fn=lifeline.pdeathsig(),  # SIGKILL when the driver dies; its descendants: the watchdog
            )
        finally:
            if out is not None:
                out.close()

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """A `flwr` command against our SuperLink; its stdout (stderr goes to the log)."""
        out = self._output()
        try:
            proc = subprocess.run(
                [str(BIN / "flwr"), *args],
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=out,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
                start_new_session=True,
                preexec_fn=lifeline.pdeathsig(),
            )
        except subprocess.TimeoutExpired:
            raise FedTinyError(
                f"flwr {args[0]} did not answer within {timeout:.0f} s; log: {self.log_path}"
            ) from None
        finally:
            if out is not None:
                out.close()
        text = _ANSI.sub("", proc.stdout.decode(errors="replace"))
        if proc.returncode != 0 or '"success": false' in text:
            msg = self._json(text).get("error-message", "") or text
            lines = [ln for ln in str(msg).splitlines() if ln.strip()]
            raise FedTinyError(
                f"flwr {args[0]} failed: {lines[-1][:300] if lines else f'exit {proc.returncode}'}; "
                f"log: {self.log_path}"
            )
        return text

    @staticmethod
    def _json(text: str) -> FlwrReply:  # `flwr ... --format json`: Flower's JSON
        start = text.find("{")
        try:
            return cast("FlwrReply", dict(json.loads(text[start:]))) if start >= 0 else {}
        except ValueError:
            return {}

    # -- the steps ---------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Write the app and the `flwr` connection, start the SuperLink, return once it is healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.app_dir.mkdir(parents=True, exist_ok=True)
        (self.app_dir / "pyproject.toml").write_text(APP_PYPROJECT.format(version=fedtiny.__version__))
        port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        self.superlink = self._spawn(
            [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
             "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"]
        )  # fmt: skip
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_stop()
            if self.superlink.poll() is not None:
                raise FedTinyError(
                    f"flower-superlink exited with code {self.superlink.returncode}; log: {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise FedTinyError(f"flower-superlink was not ready within {timeout:.0f} s; log: {self.log_path}")

    def federation_config(self) -> str:
        """One SuperNode per gateway. Flower takes whole CPUs per ClientApp (an integer field), so a fraction
        of a CPU per gateway becomes one CPU each out of a local Ray that counts ``cores / cpus_per_gateway``
        CPUs (the same concurrency); on an existing cluster (whose CPUs are fixed) it is rounded up."""
        cfg = f"num-supernodes={self.gateways} client-resources-num-gpus=0.0"
        if self.ray_address:
            return f"{cfg} client-resources-num-cpus={max(1, math.ceil(self.cpus_per_gateway))}"
        ray_cpus = max(1, round((os.cpu_count() or 2) / self.cpus_per_gateway))
        return f"{cfg} client-resources-num-cpus=1 init-args-num-cpus={ray_cpus}"

    def submit(self, scenario: Path, resume: bool, seed: int) -> int:
        """`flwr run` of the app on the prepared run directory; returns the run id."""
        run_config = " ".join(
            [f"scenario={_quote(str(scenario.resolve()))}", f"out-dir={_quote(str(self.out_dir))}",
             f"resume={'true' if resume else 'false'}", f"seed={seed}", "prepared=true"]
        )  # fmt: skip
        text = self.flwr(
            "run", str(self.app_dir), CONNECTION, "--run-config", run_config,
            "--federation-config", self.federation_config(), "--format", "json",
        )  # fmt: skip
        run_id = self._json(text).get("run-id")
        if not run_id:
            raise FedTinyError(f"flwr run gave no run id; log: {self.log_path}")
        self.run_id = int(run_id)
        return self.run_id

    def status(self) -> tuple[str, str]:
        """(status, details) of our run from `flwr list`, e.g. ("finished:completed", "")."""
        text = self.flwr("list", CONNECTION, "--run-id", str(self.run_id), "--format", "json")
        runs = self._json(text).get("runs") or [{}]
        return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))

    def follow(self, progress: Progress, poll_s: float = 0.2, status_every_s: float = 20.0) -> None:
        """Feed the ServerApp's round records to ``progress`` until the run ends; raise on its error."""
        reader = self.reader = channel.Reader(self.out_dir)
        last_status = time.time()
        ended = ""  # the status `flwr list` gave once the run had finished (records may still be landing)
        while True:
            self._check_stop()
            self._track()
            records = reader.records()
            for rec in records:
                if isinstance(rec, channel.RoundRecord):
                    progress(rec)
            error = reader.error()
            if error is not None:
                raise FedTinyError(f"{error} (details: {self.log_path})")
            if any(isinstance(rec, channel.RunDone) for rec in records):
                break
            if ended:
                raise FedTinyError(f"the run ended ({ended}) without results; log: {self.log_path}")
            assert self.superlink is not None
            if self.superlink.poll() is not None:
                raise FedTinyError(
                    f"flower-superlink exited with code {self.superlink.returncode}; log: {self.log_path}"
                )
            if time.time() - last_status > status_every_s:
                last_status = time.time()
                status, details = self.status()
                if status.startswith("finished"):
                    ended = status + (f": {details}" if details and details != "N/A" else "")
                    time.sleep(0.5)  # the ServerApp's last lines may land just after the status
                    continue
            if self.stop is not None:
                self.stop.event.wait(poll_s)
            else:
                time.sleep(poll_s)
        self._wait_finished()

    def _wait_finished(self, timeout: float = 5.0) -> None:
        """The ServerApp wrote its results: a failure Flower reports now is an error; otherwise the processes
        are stopped without waiting for Ray's own shutdown (everything is written)."""
        deadline = time.time() + timeout
        while True:
            self._check_stop()
            self._track()
            status, details = self.status()
            if status.startswith("finished") and not status.endswith("completed"):
                raise FedTinyError(f"the run ended as {status}: {details}; log: {self.log_path}")
            if status.startswith("finished") or time.time() > deadline:
                return
            time.sleep(0.5)

    def _wait_stopped(self, timeout: float = 3.0) -> None:
        """Give the ServerApp ``timeout`` seconds to answer the stop file (a ``stopped`` record): it stops at its
        next exchange, so a checkpoint being written is finished before its process is ended."""
        reader = self.reader
        if reader is None:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            ended = (channel.RunStopped, channel.RunDone)
            if any(isinstance(r, ended) for r in reader.records()) or reader.error() is not None:
                return
            time.sleep(0.05)

    def _check_stop(self) -> None:
        if self.stop is not None:
            self.stop.check()

    def _track(self) -> None:
        """Note the SuperLink's descendants (Ray may move its daemons out of the process group)."""
        from fedtiny.interrupt import process_tree

        if self.superlink is not None:
            self.seen.update(process_tree(self.superlink.pid))
        if self.stop is not None:
            self.stop.started = list(set(self.stop.started) | self.seen)

    def end_simulation(self, wait_s: float = 3.0) -> None:
        """Stop Flower's simulation process (the ServerApp's rounds) now: SIGTERM, SIGKILL after ``wait_s``.
        `flwr stop` alone takes seconds to start on a loaded machine while the rounds go on."""
        from fedtiny.interrupt import kill_processes, process_tree

        if self.superlink is None:
            return
        kill_processes([p for p in process_tree(self.superlink.pid) if _is_simulation(p)], wait_s=wait_s)

    def close(self, cancel: bool = False) -> None:
        """Stop everything started here: with ``cancel``, `flwr stop` the run first; then SIGTERM the SuperLink's
        process group, SIGKILL what is left after a grace period, and every process it had spawned."""
        from fedtiny.interrupt import kill_processes

        self._track()
        if cancel and self.run_id and self.superlink is not None and self.superlink.poll() is None:
            try:
                self.flwr("stop", str(self.run_id), CONNECTION, timeout=5)
            except FedTinyError:
                pass  # the processes are stopped below anyway
        if self.superlink is not None:
            try:
                os.killpg(self.superlink.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.superlink.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        kill_processes(self.seen, wait_s=3.0)
        if self.superlink is not None and self.superlink.poll() is None:
            self.superlink.kill()
            self.superlink.wait()

    def run(
        self,
        scenario: Path,
        resume: bool,
        seed: int,
        progress: Progress,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        """Start, submit, follow to the end, stop; a Ctrl-C (``stop``) calls ``on_stop`` (which may start
        writing the results of the rounds done, overlapping the shutdown), cancels the run and raises
        :class:`fedtiny.interrupt.RunInterrupted` once every process is down."""
        channel.reset(self.out_dir)
        if self.stop is not None:  # the ServerApp checks the stop file at every exchange with the gateways
            stop = self.stop
            stop.on_first.append(lambda: channel.request_stop(self.out_dir, stop.signum))
            if stop.event.is_set():
                channel.request_stop(self.out_dir, stop.signum)
        ok = False
        try:
            self.start()
            self.submit(scenario, resume, seed)
            self.follow(progress)
            ok = True
        except BaseException:
            if self.stop is not None and self.stop.event.is_set():
                self._wait_stopped()  # the ServerApp ends its exchange and its checkpoint
                self.end_simulation()  # no round (no checkpoint) after the stop
                on_stop()
            raise
        finally:
            self.close(cancel=not ok)
