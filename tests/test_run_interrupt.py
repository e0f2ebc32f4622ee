"""Ctrl-C and SIGTERM stop `fedtiny run` within seconds (issue 13 item 4): exit 130 / 143, no traceback, the
results of the rounds done written (summary.json "complete": false), the resume line printed, no process of the
run left (Ray's GCS, raylet, workers), and `--resume` then completes the run.

The run is a real subprocess in its own session (a terminal's Ctrl-C reaches the whole foreground process
group: the test signals the group, as a terminal does; SIGTERM goes to the process alone, as `kill` does)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import wait_for_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "rounds.csv",
    "summary.json",
    "model_int8.tflite",
    "accuracy.png",
    "groups.png",
    "costs.png",
    "report.html",
]


def _session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of session ``sid``: their command lines."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120])
        except (OSError, ValueError):
            continue
    return out


def _runtime_processes(out: Path) -> list[str]:
    """Live processes of the run's simulation runtime: the SuperLink and everything it started run in their
    own sessions, and all of them (Flower's simulation process, Ray's daemons and workers) carry the run's
    private FLWR_HOME in their environment."""
    want = f"FLWR_HOME={out.resolve() / 'runtime' / 'flwr_home'}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                stat = (d / "stat").read_text()
                if stat[stat.rindex(")") + 2] not in "ZX":
                    found.append(
                        (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                    )
        except (OSError, ValueError):
            continue
    return found


def _run_and_signal(
    out: Path, sig: int, to_group: bool, *overrides: str, twice: bool = False
) -> tuple[int, float, str, list[str]]:
    """Start `fedtiny run` (quickstart, small overrides), signal it after round 2 is checkpointed; return (exit
    code, seconds from the signal to the exit, stderr, processes of its session still alive 5 s later)."""
    cmd = [
        sys.executable,
        "-m",
        "fedtiny.cli",
        "run",
        str(ROOT / "scenarios" / "quickstart.toml"),
        "--out",
        str(out),
        "--set",
        "rounds=8",
        *[a for o in overrides for a in ("--set", o)],
    ]
    err = out.parent / f"{out.name}.stderr"
    with err.open("w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=fh, start_new_session=True, cwd=ROOT, env={**os.environ, "COLUMNS": "120"}
        )
        latest = out / "checkpoint" / "latest.json"
        wait_for_checkpoint(proc, out, 2)
        assert proc.poll() is None, err.read_text()[-3000:]
        try:
            at_signal = int(json.loads(latest.read_text())["round"])
        except (OSError, ValueError):
            at_signal = 2
        t0 = time.time()
        for _ in range(2 if twice else 1):
            if to_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            time.sleep(0.3)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(
                f"fedtiny run still alive 60 s after {signal.Signals(sig).name}:\n{err.read_text()[-3000:]}"
            )
        took = time.time() - t0
    left: list[str] = []
    for _ in range(50):  # processes that are still exiting get 5 s
        left = _session_processes(proc.pid) + _runtime_processes(out)
        if not left:
            break
        time.sleep(0.1)
    (out / "at_signal").write_text(str(at_signal))
    return rc, took, err.read_text(), left


def _check_interrupted(out: Path, rc: int, took: float, err: str, left: list[str], code: int) -> None:
    assert rc == code, err[-3000:]
    assert took < 15, f"took {took:.1f} s to stop"
    assert not left, f"processes of the run still alive: {left}"
    for bad in ("Traceback", "SIGTERM received", "PC: @", "Exception ignored"):
        assert bad not in err, err[-3000:]
    assert f"fedtiny run --resume {out}" in err
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and 2 <= summary["rounds_done"] < 8
    # no round starts after the signal (the one in flight may end): the ServerApp checks the driver's stop
    # file at every exchange, whatever the driver is busy with
    assert summary["rounds_done"] <= int((out / "at_signal").read_text()) + 1
    rows = (out / "rounds.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + summary["rounds_done"] + 1  # header, round 0, the rounds done
    assert "Incomplete run" in (out / "report.html").read_text()


def _resume(out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "run", "--resume", str(out)],
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for noise in ("DEPRECATED", "DEBUG", "INFO", "tensorflow", "TensorFlow", "WARNING", "(raylet)"):
        assert noise not in console, console[-3000:]  # Flower/Ray/TensorFlow output goes to fedtiny.log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["rounds_done"] == 8
    return summary


def _rows(out: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader((out / "rounds.csv").open())
    ]


@pytest.mark.slow
def test_ctrl_c_on_the_simulation_engine_stops_writes_and_resumes(tmp_path: Path) -> None:
    """The default engine (a private simulation SuperLink): stopped by Ctrl-C, every process it started ends;
    resumed, its rows are those of an uninterrupted run (the inline engine: same gateway code, and the
    aggregation order does not depend on the order of the gateways' replies)."""
    out = tmp_path / "ray_int"
    rc, took, err, left = _run_and_signal(out, signal.SIGINT, True)
    _check_interrupted(out, rc, took, err, left, 130)
    assert (out / "fedtiny.log").stat().st_size > 0
    _resume(out)
    ref = tmp_path / "uninterrupted"
    cmd = [sys.executable, "-m", "fedtiny.cli", "run", str(ROOT / "scenarios" / "quickstart.toml"), "--out",
           str(ref), "--set", "rounds=8", "--set", "runtime.engine=inline"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(out) == _rows(ref)


@pytest.mark.slow
def test_sigterm_on_the_simulation_engine_stops_without_a_signal_dump(tmp_path: Path) -> None:
    out = tmp_path / "ray_term"
    rc, took, err, left = _run_and_signal(out, signal.SIGTERM, False)
    _check_interrupted(out, rc, took, err, left, 143)


def test_ctrl_c_and_sigterm_on_the_inline_engine(tmp_path: Path) -> None:
    out = tmp_path / "inline_int"
    rc, took, err, left = _run_and_signal(out, signal.SIGINT, True, "runtime.engine=inline")
    _check_interrupted(out, rc, took, err, left, 130)
    _resume(out)
    out = tmp_path / "inline_term"
    rc, took, err, left = _run_and_signal(out, signal.SIGTERM, False, "runtime.engine=inline")
    _check_interrupted(out, rc, took, err, left, 143)


def test_ctrl_c_while_preparing_says_so(tmp_path: Path) -> None:
    out = tmp_path / "prep"
    cmd = [
        sys.executable,
        "-m",
        "fedtiny.cli",
        "run",
        str(ROOT / "scenarios" / "quickstart.toml"),
        "--out",
        str(out),
        "--set",
        "model.epochs=50",
        "--set",
        "seed=99",
    ]  # a model not in the cache: TensorFlow trains it
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT
    )
    time.sleep(6)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert time.time() - t0 < 15
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err


def test_a_second_ctrl_c_ends_at_once_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C pressed twice (the second one lands while the rounds stop or the results are written)."""
    out = tmp_path / "twice"
    rc, took, err, left = _run_and_signal(out, signal.SIGINT, True, "runtime.engine=inline", twice=True)
    assert rc == 130 and took < 15 and not left, err[-3000:]
    for bad in ("Traceback", "Exception ignored", "threading"):
        assert bad not in err, err[-3000:]
    assert f"fedtiny run --resume {out}" in err
    _resume(out)
