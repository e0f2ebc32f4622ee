"""Flower's supported simulation runtime (issue 9 items 1 and 4).

`flwr run .` by a Flower user against a simulation SuperLink the test starts runs the same ServerApp and
ClientApp as `fedtiny run`, writes the results, and keeps TensorFlow out of the Ray workers (read from their
memory maps while the run goes on; Flower's simulation process, which imports TensorFlow, is the control): the
ClientApp module names fedtiny's Ray hook, nothing else sets it.
Also: the channel the ServerApp streams to the driver, the Ray hook, the runtime's federation config, and the
import graph (no cycle between fedtiny.runner and fedtiny.runtime.serverapp).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fedtiny.config import scenario_to_toml
from fedtiny.plan import load_scenario
from fedtiny.runtime import channel
from fedtiny.runtime.ray_env import SETUP_HOOK, add_setup_hook

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_of(home: Path) -> dict[int, str]:
    """Live processes whose environment names ``home`` as FLWR_HOME (the SuperLink, Flower's simulation
    process, Ray's daemons and workers all inherit it): pid -> command line."""
    want = f"FLWR_HOME={home}".encode()
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if want not in (d / "environ").read_bytes().split(b"\0"):
                continue
            stat = (d / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
    return out


def _maps_tensorflow(pid: int) -> bool | None:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def _tiny_scenario(tmp: Path) -> Path:
    s = load_scenario(
        ROOT / "scenarios" / "quickstart.toml",
        ["rounds=2", "drift=[]", "eval.baselines=false", "fleet.devices=6", "output.plots=false"],
    )
    p = tmp / "tiny.toml"
    p.write_text(scenario_to_toml(s))
    return p


@pytest.mark.slow
def test_flwr_run_dot_end_to_end_with_tensorflow_blocked_in_ray_workers(tmp_path: Path) -> None:
    home, out, port = tmp_path / "flwr_home", tmp_path / "out", _free_port()
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "t"\n\n[superlink.t]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    # the venv's bin first on PATH, as for a user in an activated venv: the SuperLink starts flower-superexec
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    env.pop("RAY_RUNTIME_ENV_HOOK", None)  # a Flower user sets nothing: the app's ClientApp module names it
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "superlink.log").open("wb")
    link = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
         "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    workers: dict[int, bool | None] = {}  # Ray worker that ran a ClientAppActor -> TensorFlow mapped
    simulation_tf: bool | None = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert link.poll() is None and time.time() < deadline, "the SuperLink did not start"
                time.sleep(0.3)
        run_config = f"scenario={json.dumps(str(_tiny_scenario(tmp_path)))} out-dir={json.dumps(str(out))}"
        proc = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "t", "--run-config", run_config, "--federation-config",
             "num-supernodes=2 client-resources-num-cpus=1 init-args-num-cpus=4", "--format", "json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and '"success": true' in proc.stdout, proc.stdout + proc.stderr
        run_id = json.loads(proc.stdout[proc.stdout.index("{") :])["run-id"]
        reader = channel.Reader(out)
        deadline = time.time() + 500
        done = False
        while not done:
            assert time.time() < deadline, "the run did not finish in time"
            assert reader.error() is None, reader.error()
            for pid, cmd in _processes_of(home).items():
                if "ClientAppActor" in cmd and "ray::" in cmd:
                    workers[pid] = _maps_tensorflow(pid) or workers.get(pid, False)
                elif "flwr-simulation" in cmd and not simulation_tf:  # it imports TensorFlow as it starts
                    simulation_tf = _maps_tensorflow(pid)
            done = any(isinstance(r, channel.RunDone) for r in reader.records())
            time.sleep(0.3)
        deadline = time.time() + 120
        while True:  # Flower's own word on the run
            ls = subprocess.run([str(BIN / "flwr"), "list", "t", "--run-id", str(run_id), "--format", "json"],
                                env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
            status = json.loads(ls.stdout[ls.stdout.index("{") :])["runs"][0]["status"]
            if status.startswith("finished") or time.time() > deadline:
                break
            time.sleep(2)
        assert status == "finished:completed", status
    finally:
        try:
            os.killpg(link.pid, signal.SIGTERM)
            link.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in _processes_of(home):
            os.kill(pid, signal.SIGKILL)
        log.close()
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["gateways"] == 2  # 6 devices spread over 2 SuperNodes
    assert all(int(r["devices_trained"]) == 3 for r in rows[1:])
    assert workers, "no Ray ClientAppActor seen during the run"
    assert not any(workers.values()), f"TensorFlow mapped in Ray workers: {workers}"
    assert simulation_tf is True, "control: Flower's simulation process imports TensorFlow (the scan sees it)"


def test_the_ray_hook_adds_the_setup_hook_and_keeps_flowers_env() -> None:
    env = add_setup_hook({"env_vars": {"PYTHONPATH": "/app"}})
    assert env["worker_process_setup_hook"] == SETUP_HOOK
    assert env["env_vars"]["PYTHONPATH"] == "/app"
    code = "import fedtiny.runtime.ray_env as r; r.block_tensorflow(); import tensorflow"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_the_superlinks_processes_start_without_tensorflow(tmp_path: Path) -> None:
    """Every process under `fedtiny run`'s SuperLink gets its environment: Python's start-up hook there
    blocks TensorFlow (Flower's simulation process would import it for nothing)."""
    from fedtiny.runtime.superlink import SimulationRuntime

    env = SimulationRuntime(tmp_path, 2, 0.5).env()
    script = tmp_path / "flwr-simulation"  # named as Flower's simulation process: the hook applies to it only
    script.write_text(
        "import flwr.simulation.ray_transport.utils as u, sys\nprint(u.TF, sys.modules['tensorflow'])\n"
    )
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["None", "None"], proc.stderr[-2000:]
    other = "import sys, sitecustomize; print('tensorflow' in sys.modules)"  # e.g. the SuperLink: untouched
    proc = subprocess.run([sys.executable, "-c", other], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_the_channel_carries_rounds_done_and_one_error_line(tmp_path: Path) -> None:
    from fedtiny.errors import ScenarioError
    from fedtiny.results import RoundRow

    channel.reset(tmp_path)
    w, r = channel.Writer(tmp_path), channel.Reader(tmp_path)
    row = RoundRow(3, 0, 0.5, 0.5, 0.5, 0, 0, 0, 0, 0, 1.25)
    row.accuracy, row.accuracy_global = 0.75, 0.5
    w.round_done(row, 10)
    with (tmp_path / channel.RUNTIME_DIR / channel.PROGRESS).open("a") as fh:
        fh.write('{"round": 4')  # a line being written is not read yet
    recs = r.records()
    rec = recs[0]
    assert len(recs) == 1 and isinstance(rec, channel.RoundRecord)
    assert (rec.round, rec.rounds, rec.accuracy, rec.accuracy_global, rec.wall_s) == (3, 10, 0.75, 0.5, 1.25)
    assert r.error() is None
    w.error(ScenarioError("x.toml: 'rounds' must be >= 1\nmore"))
    assert r.error() == "x.toml: 'rounds' must be >= 1"
    w.error(ValueError("bad"))
    assert r.error() == "ValueError: bad"


def test_federation_config_keeps_the_gateways_concurrency(tmp_path: Path) -> None:
    from fedtiny.runtime.superlink import SimulationRuntime

    local = SimulationRuntime(tmp_path, 5, 0.5).federation_config()
    cores = os.cpu_count() or 2
    assert local == f"num-supernodes=5 client-resources-num-gpus=0.0 client-resources-num-cpus=1 " \
        f"init-args-num-cpus={2 * cores}"  # fmt: skip
    cluster = SimulationRuntime(tmp_path, 4, 1.5, ray_address="127.0.0.1:6379")
    assert cluster.federation_config().endswith("client-resources-num-cpus=2")
    assert cluster.env()["RAY_ADDRESS"] == "127.0.0.1:6379"
    assert cluster.env()["FLWR_HOME"] == str(tmp_path.resolve() / "runtime" / "flwr_home")
    assert cluster.env()["RAY_RUNTIME_ENV_HOOK"] == "fedtiny.runtime.ray_env.add_setup_hook"


def test_runner_and_the_server_app_form_no_import_cycle() -> None:
    """fedtiny.runtime.serverapp (and what it imports) never imports fedtiny.runner."""
    code = (
        "import sys, fedtiny.runtime.serverapp, fedtiny.plan, fedtiny.finish, fedtiny.runtime.superlink\n"
        "print('fedtiny.runner' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
