"""Scale-out: a small scenario runs on an existing Ray cluster started with `ray start --head`.

The head runs with ``--block`` in its own process group and is stopped by that group's id (not with
``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_quickstart(
    out: Path, address: str, env: dict[str, str], *sets: str
) -> subprocess.CompletedProcess[str]:
    """`fedtiny run` of a 2-round quickstart without drift or baselines on the cluster at ``address``."""
    overrides = ["rounds=2", "drift=[]", "eval.baselines=false", *sets]
    cmd = [
        sys.executable,
        "-m",
        "fedtiny.cli",
        "run",
        str(ROOT / "scenarios" / "quickstart.toml"),
        "--out",
        str(out),
    ]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.run(
        [*cmd, "--ray-address", address], capture_output=True, text=True, timeout=400,
        env={**env, "COLUMNS": "120"}, check=False,
    )  # fmt: skip


def test_scenario_runs_on_an_existing_ray_cluster(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    head = _start_head(port, 2, env)
    try:
        address = f"127.0.0.1:{port}"
        time.sleep(2)
        out = tmp_path / "out"
        proc = _run_quickstart(out, address, env, "fleet.devices=6", "fleet.devices_per_gateway=3")
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = list(csv.DictReader((out / "rounds.csv").open()))
        assert [int(r["round"]) for r in rows] == [0, 1, 2] and int(rows[-1]["devices_trained"]) == 3
        assert json.loads((out / "summary.json").read_text())["gateways"] == 2
    finally:
        _stop(head)


def _start_ray(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(RAY), "start", "--block", "--disable-usage-stats", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: stopped by group, never with `ray stop`
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start_head(port: int, cpus: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A Ray head on loopback, in its own process group; returns once its GCS listens."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short dir: socket paths
    head = _start_ray("--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                      "--include-dashboard=false", f"--temp-dir={temp}", env=env)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head
        except OSError:
            assert head.poll() is None, "ray start --head exited"
            time.sleep(0.5)
    raise AssertionError("the Ray head did not listen within 60 s")


def test_gateways_spread_over_a_two_node_ray_cluster(tmp_path: Path) -> None:
    """Issue 12: a head node and a worker node (one CPU each) on this machine; a gateway takes a whole CPU, so
    the scenario's gateways must run on both nodes; each gateway notes its node in the summary."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    head = _start_head(port, 1, env)
    worker = None
    address = f"127.0.0.1:{port}"
    try:
        worker = _start_ray(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", env=env)
        import ray

        ray.init(address=address, logging_level="ERROR")
        try:
            deadline = time.time() + 60
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
                time.sleep(0.5)
            nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            assert len(nodes) == 2
        finally:
            ray.shutdown()
        out = tmp_path / "out"
        proc = _run_quickstart(
            out,
            address,
            env,
            "fleet.devices=8",
            "fleet.devices_per_gateway=2",
            "runtime.cpus_per_gateway=1.0",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["gateways"] == 4
        used = set(summary["fleet_stats"]["ray_nodes"])
        assert used == nodes, f"gateways ran on {len(used)} of the 2 nodes"
        # issue 18: the same bits as the inline engine in one process (rounds.csv but wall time, the model)
        ref = tmp_path / "inline"
        cmd = [sys.executable, "-m", "fedtiny.cli", "run", str(ROOT / "scenarios" / "quickstart.toml"), "--out",
               str(ref)]  # fmt: skip
        for o in ("rounds=2", "drift=[]", "eval.baselines=false", "fleet.devices=8", "fleet.devices_per_gateway=2",
                  "runtime.cpus_per_gateway=1.0", "runtime.engine=inline"):  # fmt: skip
            cmd += ["--set", o]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

        def rows(d: Path) -> list[dict[str, str]]:
            with (d / "rounds.csv").open() as fh:
                return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(fh)]

        assert rows(out) == rows(ref)
        assert (out / "model_int8.tflite").read_bytes() == (ref / "model_int8.tflite").read_bytes()
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
