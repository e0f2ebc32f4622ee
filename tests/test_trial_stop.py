"""`fedtiny trial` and `fedtiny serve` are as careful as `fedtiny run` (issue 19): one per directory (the run
lock), Ctrl-C as a terminal sends it (SIGINT to the whole foreground process group) stops a trial within
seconds with the results of the rounds done and no process left, and `serve` waiting for gateways that never
come ends with the command a gateway runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_field_trial import _fedtiny, _our_processes

ROOT = Path(__file__).resolve().parent.parent
FIELD = str(ROOT / "scenarios" / "field_trial.toml")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedtiny.cli", *args]


@pytest.mark.slow
def test_ctrl_c_stops_a_trial_in_order_and_a_second_trial_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "trial"
    err = tmp_path / "trial.stderr"
    with err.open("w") as fh:  # its own session: the test signals its process group, as a terminal does
        proc = subprocess.Popen(
            _cli("trial", FIELD, "--boards", "1", "--out", str(out), "--set", "rounds=3"),
            stdout=fh, stderr=fh, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            progress = out / "progress.jsonl"
            if progress.is_file() and '"round": 1,' in progress.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, err.read_text()[-3000:]
        # a second trial on the same directory while the first lives: refused in one line
        second = subprocess.run(
            _cli("trial", FIELD, "--boards", "1", "--out", str(out)),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip() == (
            f"fedtiny: error: {out}: in use by a running fedtiny (pid {proc.pid}, {out / 'fedtiny.lock'}); "
            "wait for it to end or stop it"
        )
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=30)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    assert rc == 130, text[-3000:]
    lines = [ln for ln in text.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and lines[0].startswith("fedtiny: interrupted (Ctrl-C) after round"), text[-3000:]
    assert "start it again with: fedtiny trial" in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped_by"] == "Ctrl-C"
    assert 1 <= summary["rounds_completed"] < 3
    report = (out / "report.html").read_text()
    assert (
        "Incomplete run" in report
        and "It does not resume: start it again" in report
        and "--resume" not in report
    )
    assert not (out / "fedtiny.lock").exists()
    deadline = time.time() + 10
    while (left := _our_processes(str(tmp_path))) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"processes of the stopped trial left: {left}"
    print(f"trial stopped {took:.1f} s after Ctrl-C, no process left")


def test_serve_without_its_gateways_times_out_with_the_command_a_gateway_runs(tmp_path: Path) -> None:
    out = tmp_path / "field"
    port = "9" + str(os.getpid() % 900 + 100)  # a free-ish port: the SuperLink must bind it
    res = _fedtiny("serve", FIELD, "--out", str(out), "--gateways", "2", "--wait-s", "5", "--port", port)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("fedtiny: error: 0 of 2 gateway(s) connected within 5 s (--wait-s)"), err
    assert f"fedtiny gateway --superlink 127.0.0.1:{port} --device URI" in err
    assert f"--replay {out.resolve() / 'replay'}" in err
    assert not (out / "fedtiny.lock").exists()
    _no_left = _our_processes(str(tmp_path))
    deadline = time.time() + 10
    while _no_left and time.time() < deadline:
        time.sleep(0.2)
        _no_left = _our_processes(str(tmp_path))
    assert not _no_left, _no_left


@pytest.mark.slow
def test_boards_are_the_first_devices_of_recorded_data_named_by_their_ids(tmp_path: Path) -> None:
    """`--boards 1` on data with 2 devices starts 1 board, replaying the data's first device, named by its id."""
    import keras
    import numpy as np
    from test_byom import C, D, _convert, _device_data, _examples

    keras.utils.set_random_seed(0)  # a user's model as test_byom's "float_io" (Dense -> Dense -> SOFTMAX)
    x, y = _examples(np.random.default_rng(1), 2000)
    inp = keras.Input((D,), batch_size=1)
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(keras.layers.Dense(16, "relu")(inp))))
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=4, batch_size=32, verbose=0)
    model = tmp_path / "m.tflite"
    model.write_bytes(_convert(m, x[:200], False, False))
    data = _device_data(tmp_path / "d.npz", devices=2, per_device=40)
    p = tmp_path / "field.toml"
    p.write_text(f'name = "f"\nseed = 2\nrounds = 1\n[model]\ntflite = "{model}"\n[data]\npath = "{data}"\n')
    out = tmp_path / "trial"
    r = _fedtiny("trial", str(p), "--boards", "1", "--out", str(out), timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert "1 board replays the recordings of device 100 (the first 1 of the data's 2)" in text
    assert "started 1 virtual board(s)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert [b["board"] for b in summary["boards"]] == ["100"] and summary["board_failures"] == 0
    assert any(line.startswith("100 ") for line in r.stdout.splitlines())  # the board table names it
    assert len(np.load(out / "replay" / "device_1.npz")["test_feats_0"]) > 0
