"""Task data and front-end features are the same bits under numpy's other CPU code paths (fedtiny.exactmath):
the vibration, digits and kws generators and the MFCC front ends, each run in a subprocess per environment
of tests/cpu_targets.py (numpy's SIMD dispatch switched down, another OpenBLAS kernel), bytes compared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cpu_targets import other_cpu_envs

from fedtiny import exactmath as em

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
import numpy as np
from fedtiny.tasks import get_task
from fedtiny.tasks.vibration import front_end
from fedtiny.tasks.audio import mfcc, _mel_matrix, _dct_matrix, _HANN
from fedtiny.data._mfcc import Mfcc
from fedtiny.data.knobs import apply_condition
from fedtiny import exactmath as em

out, with_kws = sys.argv[1], sys.argv[2] == "1"
arrs = {}
vib = get_task("vibration")
labels = np.arange(60) % 5
for i, cond in enumerate([None, {"speed_hz": 24.0, "gain": 0.6, "resonance_hz": 2600.0, "noise": 0.08}]):
    raw = vib.raw(labels, np.random.default_rng(7 + i), cond)
    arrs[f"vib_raw{i}"] = raw
    arrs[f"vib_feat{i}"] = front_end(raw)
dig = get_task("digits")
arrs["digits"] = dig.generate(np.arange(40) % 10, np.random.default_rng(3), {"rotation_deg": 17.0})
rng = np.random.default_rng(5)
t = np.arange(16000) / 16000
audio = (0.3 * em.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal((6, 16000))).astype(np.float32)
arrs["kws_mfcc"] = mfcc(audio)
arrs["mel"], arrs["dct"], arrs["hann"] = _mel_matrix(), _dct_matrix(), _HANN
arrs["mfcc_frontend"] = Mfcc()(audio)
arrs["mfcc_frontend2"] = Mfcc(fmax=7600.0, mel_bins=32, coefficients=13)(audio)
arrs["knobs"] = np.stack(apply_condition(list(audio[:2]), {"snr_db": 7.5}, np.random.default_rng(1)))
x = np.random.default_rng(2).uniform(-700, 700, 4097)
arrs["em"] = np.stack([em.exp(x), em.log(np.abs(x)), em.sin(x), em.cos(x), em.log10(np.abs(x)),
                       em.log1p(np.abs(x)), em.pow(10.0, x / 300)])
if with_kws:
    kws = get_task("kws", speakers_per_group=2, cache=sys.argv[3])
    arrs["kws"] = kws.generate(np.arange(24) % 12, np.random.default_rng(11), {"noise": 0.01})
np.savez(out, **arrs)
"""


def _run(env: dict[str, str], out: Path, cache: Path | None) -> dict[str, np.ndarray]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, str(out), "1" if cache else "0", str(cache or "")]
    r = subprocess.run(args, env=full, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def test_task_data_same_bits_on_other_cpu_paths(tmp_path: Path) -> None:
    cache = tmp_path / "kws-cache" if shutil.which("espeak-ng") else None  # voiced once, by the first run
    envs = [{}, *other_cpu_envs(tmp_path)]
    runs = [_run(env, tmp_path / f"run{i}.npz", cache) for i, env in enumerate(envs)]
    base = runs[0]
    diffs = []
    for env, got in zip(envs[1:], runs[1:]):
        assert sorted(got) == sorted(base)
        for k in base:
            a, b = base[k], got[k]
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                n = int(np.sum(a.view(np.uint8) != b.view(np.uint8))) if a.shape == b.shape else -1
                diffs.append(f"{k} under {env}: {n} bytes differ")
    assert not diffs, "\n".join(diffs)


def test_exactmath_close_to_numpy() -> None:
    rng = np.random.default_rng(0)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    x = rng.uniform(-745, 709, 200_000)
    assert rel(em.exp(x), np.exp(x)) < 1e-15
    y = np.exp(rng.uniform(-700, 700, 200_000))
    assert rel(em.log(y), np.log(y)) < 1e-15
    assert rel(em.log10(y), np.log10(y)) < 1e-15
    z = rng.uniform(0, 10, 200_000)
    assert rel(em.log1p(z), np.log1p(z)) < 1e-15
    assert rel(em.pow(10.0, z - 5), 10.0 ** (z - 5)) < 1e-14
    for hi in (4.0, 1e3, em.MAX_TRIG_ARG):
        t = rng.uniform(-hi, hi, 200_000)
        s, c = em.sincos(t)
        assert np.max(np.abs(s - np.sin(t))) < 2.3e-16 and np.max(np.abs(c - np.cos(t))) < 2.3e-16
        big = np.abs(np.sin(t)) > 1e-3
        assert rel(s[big], np.sin(t)[big]) < 1e-15
    assert np.max(np.abs(em.hann(66) - np.hanning(66))) < 1e-15
    cz = (rng.standard_normal(1000) + 1j * rng.standard_normal(1000)).astype(np.complex64)
    assert rel(em.abs_complex(cz), np.abs(cz.astype(np.complex128))) < 1e-15
    a = rng.standard_normal((50, 257)).astype(np.float32)
    b = rng.standard_normal((257, 40)).astype(np.float32)
    m = em.matmul_ordered(a, b)
    assert m.dtype == np.float32 and rel(m, a.astype(np.float64) @ b.astype(np.float64)) < 1e-6
    # special values and the range limit
    assert np.array_equal(em.exp(np.array([-np.inf, np.inf, 710.0, -746.0])), [0.0, np.inf, np.inf, 0.0])
    lg = em.log(np.array([0.0, -1.0, np.inf]))
    assert lg[0] == -np.inf and np.isnan(lg[1]) and lg[2] == np.inf
    assert em.exp(0.0) == 1.0 and em.log(1.0) == 0.0 and em.cos(0.0) == 1.0 and em.sin(0.0) == 0.0
    with pytest.raises(ValueError, match="outside the exactly reduced range"):
        em.sin(np.array([1.0, 2e6]))
