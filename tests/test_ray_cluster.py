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


def test_scenario_runs_on_an_existing_ray_cluster(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={tempfile.mkdtemp(prefix='rt', dir='/tmp')}",
            "--disable-usage-stats",
        ],  # short dir: socket paths
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:  # the GCS listens once the head is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                time.sleep(0.5)
        time.sleep(2)
        out = tmp_path / "out"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedtiny.cli",
                "run",
                str(ROOT / "scenarios" / "quickstart.toml"),
                "--out",
                str(out),
                "--set",
                "rounds=2",
                "--set",
                "drift=[]",
                "--set",
                "fleet.devices=6",
                "--set",
                "fleet.devices_per_gateway=3",
                "--set",
                "eval.baselines=false",
                "--ray-address",
                address,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, "COLUMNS": "120"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = list(csv.DictReader((out / "rounds.csv").open()))
        assert [int(r["round"]) for r in rows] == [0, 1, 2] and int(rows[-1]["devices_trained"]) == 3
        assert json.loads((out / "summary.json").read_text())["gateways"] == 2
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
