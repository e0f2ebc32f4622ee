"""benchmarks/kernels_vs_cmsis.py on the smallest shipped reference model (vibration) on the emulated Cortex-M4:
fedtiny's portable and DSP-build kernels and CMSIS-NN's give the interpreter's bytes at every layer, and the
summary line has its documented form. Skipped (with the reason) without CMSIS-NN's sources, arm-none-eabi-gcc or
qemu-system-arm."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "kernels_vs_cmsis.py"
SUMMARY = re.compile(
    r"^(?P<model>\S+) whole model: fedtiny (?P<n>\d+) instructions, CMSIS-NN (?P<m>\d+), "
    r"(?P<ratio>\d+\.\d\d)x, outputs identical: (?P<same>yes|no)$"
)


def _kvc():  # benchmarks/ is not a package
    spec = importlib.util.spec_from_file_location("kernels_vs_cmsis", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kernels_vs_cmsis"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_kernels_vs_cmsis_smallest_model() -> None:
    kvc = _kvc()
    cmsis = Path(os.environ.get("CMSIS_NN_DIR") or kvc.DEFAULT_CMSIS)
    why = kvc.missing_tools(cmsis, ["m4"])
    if why:
        pytest.skip(why)
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "vibration", "--cores", "m4", "--cmsis-nn", str(cmsis)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if " whole model: " in ln]
    assert len(lines) == 1, r.stdout
    m = SUMMARY.match(lines[0])
    assert m, lines[0]
    assert m["model"] == "vibration"
    assert m["same"] == "yes", r.stdout
    n, c = int(m["n"]), int(m["m"])
    assert n > 0 and c > 0
    assert m["ratio"] == f"{n / c:.2f}"
    # every layer compared on all three kernels (CMSIS-NN has no RESHAPE: "-")
    rows = [ln.split(" | ") for ln in r.stdout.splitlines() if re.match(r"^\d+ \| ", ln)]
    assert [row[1] for row in rows] == [
        "CONV_2D",
        "CONV_2D",
        "CONV_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
    ]
    for row in rows:
        assert row[-1] in ("yes/yes/yes", "yes/yes/-"), row
