"""The firmware's golden vectors come out the same from any machine (issue 18): `scripts/gen_golden.py --check`
passes here and under the other CPU paths of tests/cpu_targets.py (numpy's SIMD dispatch down to its baseline,
OpenBLAS's Haswell and Sandybridge kernels, numba for a generic CPU) in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cpu_targets import other_cpu_envs

ROOT = Path(__file__).resolve().parent.parent


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_golden.py"), "--check", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("variant", range(3))
def test_golden_headers_regenerate_identically_on_another_cpu(variant: int, tmp_path: Path) -> None:
    envs = other_cpu_envs(tmp_path)
    if variant >= len(envs):  # pragma: no cover - ARM64 has no OpenBLAS core type to force
        pytest.skip("no such CPU path on this architecture")
    out = _check(envs[variant])
    assert out.returncode == 0, f"{envs[variant]}: {out.stdout[-1500:]}{out.stderr[-1500:]}"


def test_the_check_sees_a_stale_header(tmp_path: Path) -> None:
    """--check compares bytes: a copy of the headers with one float's last hex digit changed is reported (so
    the tests above can fail)."""
    import shutil

    copy = tmp_path / "golden"
    shutil.copytree(ROOT / "firmware" / "tests" / "golden", copy)
    header = copy / "golden_train.h"
    text = header.read_text()
    i = text.index("p-") - 1  # the last hex digit of the first float's mantissa
    header.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :])
    out = _check({}, "--dir", str(copy))
    assert out.returncode == 1 and "golden_train.h" in out.stderr
    assert _check({}, "--dir", str(ROOT / "firmware" / "tests" / "golden")).returncode == 0
