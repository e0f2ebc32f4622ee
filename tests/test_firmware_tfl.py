"""The C int8 interpreter (firmware/core/ft_tfl_*, issue 11) against TFLite Micro.

scripts/gen_tfl_golden.py builds small int8 models with the TF converter (conv/depthwise/pool/add/mean/pad/
FC/softmax/quantize sweeps) and fedtiny's reference models, runs them in the pip ``tflite-micro`` runtime with
every tensor preserved, and writes a bundle into firmware/build/tfl-golden (cached by the generator's hash
and the TensorFlow version; nothing is committed). ``make test-tfl`` then runs firmware/tests/test_tfl.c on
it, built with gcc and with clang under ASan+UBSan and for the Cortex-M4F in QEMU: every op's output must be
bit-identical, the planned arena no larger than TFLite Micro's, every truncated image refused, and
thousands of random mutations of the models refused or run without a sanitizer report.

Needs cc + make + TensorFlow; clang, arm-none-eabi-gcc and qemu-system-arm each skip their part when missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
GOLDEN = FW / "build" / "tfl-golden"
GEN = ROOT / "scripts" / "gen_tfl_golden.py"
PASS_LINE = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)
FUZZ = int(os.environ.get("FEDTINY_TFL_FUZZ", "300"))  # mutations per model and build (15 models)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (apt: gcc-arm-none-eabi libnewlib-arm-none-eabi "
            f"qemu-system-arm clang; `make system-deps`)"
        )


@pytest.fixture(scope="module")
def golden() -> Path:
    """The golden bundle, regenerated when the generator or TensorFlow changes."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    import tensorflow as tf

    key = hashlib.sha256(GEN.read_bytes() + tf.__version__.encode()).hexdigest()[:16]
    stamp = GOLDEN / "key"
    if not (stamp.exists() and stamp.read_text() == key and (GOLDEN / "tfl_golden.bin").exists()):
        r = subprocess.run(
            [sys.executable, str(GEN), "--out", str(GOLDEN)],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        stamp.write_text(key)
    return GOLDEN


def make(*targets: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    need("make", "cc")
    r = subprocess.run(
        ["make", "-C", str(FW), f"TFL_GOLDEN={GOLDEN}", f"TFL_FUZZ={FUZZ}", *targets],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"make {' '.join(targets)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def check_run(out: str) -> dict[str, tuple[int, int]]:
    """The pass line says 0 failed; returns {model: (arena, tflm_arena)}."""
    m = PASS_LINE.findall(out)
    assert m, f"no pass line in output:\n{out[-3000:]}"
    assert int(m[-1][1]) == 0, out[-4000:]
    assert "runtime error" not in out and "ERROR: AddressSanitizer" not in out, out[-4000:]
    arenas = {}
    for name, ours, tflm in re.findall(
        r"^case (\S+): .* arena (\d+) bytes \(TFLite Micro (\d+)\)", out, re.MULTILINE
    ):
        arenas[name] = (int(ours), int(tflm))
    return arenas


def test_tfl_host_gcc_asan_ubsan_bit_exact_and_fuzz(golden: Path) -> None:
    r = make("test-tfl-host")
    arenas = check_run(r.stdout + r.stderr)
    # every synthetic sweep model and fedtiny's three reference models ran, bit-exact, in a smaller arena
    assert len(arenas) >= 14, r.stdout[-3000:]
    for name in ("fedtiny_vibration", "fedtiny_digits", "fedtiny_kws", "conv_chain", "dw_chain", "residual"):
        assert name in arenas, r.stdout[-3000:]
    assert all(ours <= tflm for ours, tflm in arenas.values()), arenas
    assert re.search(r"^case refuse_tanh: unsupported \(op \d+ TANH", r.stdout, re.MULTILINE), r.stdout[
        -3000:
    ]
    fz = re.search(
        r"^fuzz: (\d+) mutated images, (\d+) refused, (\d+) verified and ran", r.stdout, re.MULTILINE
    )
    assert fz and int(fz.group(1)) >= 1000, r.stdout[-2000:]


def test_tfl_host_clang_asan_ubsan(golden: Path) -> None:
    need("clang")
    r = make("test-tfl-clang")
    check_run(r.stdout + r.stderr)


def test_tfl_qemu_cortex_m4(golden: Path) -> None:
    need("arm-none-eabi-gcc", "qemu-system-arm")
    r = make("test-tfl-mps2")
    arenas = check_run(r.stdout + r.stderr)
    assert len(arenas) >= 14, r.stdout[-3000:]
