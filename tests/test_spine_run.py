"""The main job end to end: `fedtiny run scenarios/quickstart.toml` on the default engine (Flower's simulation
runtime: a private simulation SuperLink driven by `flwr run`, Ray)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedtiny.model.flatbuffer import read_head
from fedtiny.model.runtime import Int8Runner
from fedtiny.plan import load_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedtiny.cli",
            "run",
            str(ROOT / "scenarios" / "quickstart.toml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: accuracy" in proc.stdout
    console = proc.stdout + proc.stderr
    # a clean console (issue 9 item 4): Flower's, Ray's and TensorFlow's output goes to fedtiny.log
    for noise in ("DEPRECATED", "run_simulation", "DEBUG", "INFO", "WARNING", "tensorflow", "(raylet)"):
        assert noise not in console, console[-3000:]
    assert "Starting Flower SuperLink" in (out / "fedtiny.log").read_text(errors="replace")
    return out


def test_quickstart_writes_every_result_file(quickstart_run: Path) -> None:
    for name in [
        "scenario.resolved.toml",
        "rounds.csv",
        "summary.json",
        "model_int8.tflite",
        "model_int8.h",
        "accuracy.png",
    ]:
        assert (quickstart_run / name).stat().st_size > 0, name
    resolved = tomllib.loads((quickstart_run / "scenario.resolved.toml").read_text())
    assert resolved["seed"] == 7 and resolved["fleet"]["devices"] == 20
    assert (quickstart_run / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quickstart_rounds_csv_has_one_row_per_round(quickstart_run: Path) -> None:
    rows = list(csv.DictReader((quickstart_run / "rounds.csv").open()))
    s = load_scenario(ROOT / "scenarios" / "quickstart.toml")
    assert [int(r["round"]) for r in rows] == list(range(s.rounds + 1))
    for key in ["accuracy", "accuracy_global", "loss", "bytes_up", "bytes_down", "wall_s"]:
        assert key in rows[0]
    assert all(int(r["bytes_up"]) > 0 and int(r["bytes_down"]) > 0 for r in rows[1:])
    assert all(int(r["devices_trained"]) == 10 for r in rows[1:])  # fraction 0.5 of 20


def test_quickstart_improves_the_int8_model_on_the_devices_data(quickstart_run: Path) -> None:
    summary = json.loads((quickstart_run / "summary.json").read_text())
    base = summary["base_model"]
    assert abs(base["int8_accuracy_clean"] - base["float_accuracy_clean"]) <= 0.015
    assert summary["final_accuracy"] >= summary["initial_accuracy"] + 0.2
    assert summary["updates_rejected"] == 0


def test_final_model_is_the_deployed_int8_head_and_runs_in_tflite_micro(quickstart_run: Path) -> None:
    model = (quickstart_run / "model_int8.tflite").read_bytes()
    head = read_head(model)
    assert head.weights.shape == (5, 64)
    x = np.random.default_rng(0).normal(size=(5, 32, 32, 1)).astype(np.float32)
    logits, feats = Int8Runner(model, "tflm").run(x)
    from fedtiny.ondevice import head_forward_int8

    assert np.array_equal(logits, head_forward_int8(head, feats))
    header = (quickstart_run / "model_int8.h").read_text()
    assert f"FEDTINY_MODEL_LEN {len(model)}u" in header


def test_gateway_code_imports_without_tensorflow() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import fedtiny.clients.simulated.app, fedtiny.ondevice, fedtiny.fleet.data, fedtiny.server.fleet_server\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
