"""Same bits on every machine (issue 18): one scenario and seed give byte-identical results whatever the CPU
target, the thread count, the engine, or a resume in between.

"Another machine" is played on this one (tests/cpu_targets.py): numba compiled for a generic CPU in its own
cache, numpy's SIMD dispatch switched down to its baseline, OpenBLAS forced to another kernel. Compared byte for
byte: every column of rounds.csv but the wall time, the final model_int8.tflite, and the last checkpoint (its
arrays, and its metadata without wall times).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cpu_targets import other_cpu_envs
from run_helpers import wait_for_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 7  # past the quickstart's drift at round 6
WALL = ("wall_s",)


def _cmd(out: Path, *overrides: str) -> list[str]:
    sets = [a for o in (f"rounds={ROUNDS}", *overrides) for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "fedtiny.cli",
        "run",
        str(ROOT / "scenarios" / "quickstart.toml"),
        "--out",
        str(out),
        *sets,
    ]


def _run(out: Path, env: dict[str, str], *overrides: str) -> Path:
    proc = subprocess.run(
        _cmd(out, *overrides),
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in WALL} for r in rows]


def results(out: Path) -> dict[str, object]:
    """What must be identical: rounds.csv (minus wall time), the final model, the last checkpoint."""
    with (out / "rounds.csv").open() as fh:
        rows = _without_wall(list(csv.DictReader(fh)))
    [state] = sorted((out / "checkpoint").glob("state-*.npz"))
    with np.load(state) as z:
        arrays = {k: (z[k].dtype.str, z[k].shape, z[k].tobytes()) for k in sorted(z.files)}
    meta = json.loads(state.with_suffix(".json").read_text())
    meta["rows"] = _without_wall(meta["rows"])
    return {
        "rounds.csv": rows,
        "model_int8.tflite": (out / "model_int8.tflite").read_bytes(),
        "checkpoint": (state.name, arrays, meta),
    }


def assert_same(a: dict[str, object], b: dict[str, object], what: str) -> None:
    for key in a:
        assert a[key] == b[key], f"{what}: {key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The quickstart (7 rounds) on the inline engine, this CPU, all threads."""
    tmp = tmp_path_factory.mktemp("ref")  # its own cache: the data, pools and partitions made in this run
    res = results(_run(tmp / "run", {"FEDTINY_CACHE": str(tmp / "cache")}, "runtime.engine=inline"))
    assert len(res["rounds.csv"]) == ROUNDS + 1  # type: ignore[arg-type]  # round 0: the base model
    return res


def test_another_cpu_target_and_one_thread_give_the_same_bits(
    reference: dict[str, object], tmp_path: Path
) -> None:
    """Generic numba target, numpy's baseline dispatch, one thread. A fresh cache too: the task's data, the feature pools and the device partitions are made again there."""
    env = {**other_cpu_envs(tmp_path)[0], "FEDTINY_CACHE": str(tmp_path / "cache")}  # generic numba, numpy
    assert_same(reference, results(_run(tmp_path / "run", env, "runtime.engine=inline")), f"env {env}")


def test_the_simulation_engine_gives_the_inline_engines_bits(
    reference: dict[str, object], tmp_path: Path
) -> None:
    """Flower's simulation runtime on Ray (gateways in Ray workers, two numba threads each at most) vs inline."""
    assert_same(reference, results(_run(tmp_path / "run", {})), "simulation engine")


def test_a_run_resumed_under_another_cpu_target_equals_an_uninterrupted_one(
    reference: dict[str, object], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(
            _cmd(out, "runtime.engine=inline"), cwd=ROOT, stdout=log, stderr=log, start_new_session=True
        )
        wait_for_checkpoint(proc, out, 3)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    assert json.loads((out / "summary.json").read_text())["complete"] is False
    env = other_cpu_envs(tmp_path)[1]  # an AVX2-class target, two threads
    proc2 = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "run", "--resume", str(out)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert_same(reference, results(out), f"resumed under {env}")
