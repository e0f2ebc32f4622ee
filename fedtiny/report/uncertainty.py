"""Sampling uncertainty of a pooled accuracy whose test observations are crossed between devices and shared
samples (docs/drift-events.md, "Metrics": "Uncertainty").

Every device's local test set is drawn from a shared held-out pool (generated fleets: the last quarter of
``fleet.pool_per_class`` examples per (condition variant, class), shared by all devices), so the
``devices x test_samples`` observations of a group are not independent: a pool sample drawn by 100 devices
counts 100 times but is one piece of evidence, and a device whose condition or class mix suits the model
counts on all of its samples. Treating the observations as independent would give intervals several times
too narrow. We use the two-way cluster-robust variance of the pooled accuracy (Cameron, Gelbach & Miller
2011; Owen's pigeonhole bootstrap estimates the same quantity), clusters = devices and pool samples:

    e_o = y_o - p  (linearised ratio p = sum y / N over the N valid observations)
    V = [ sum_devices (sum_o e_o)^2 + sum_samples (sum_o e_o)^2 - sum_o e_o^2 ] / N^2

floored at the larger of the two one-way terms (the subtracted term treats every observation as its own
(device, sample) cell, which can only make V larger: conservative). ``V`` becomes an effective sample size
``n_eff = p (1 - p) / V`` (at most N; when p is 0 or 1, V is 0 and n_eff is the number of distinct samples),
and the 95% interval is the Wilson score interval at ``n_eff`` (stays inside [0, 1]). No resampling: the
result is deterministic: two compiled passes over the observations (numba; the numpy expressions are the
fallback and the reference, equal up to float64 summation order), about 10 ms per million observations, which
matters at a million devices where every round evaluates tens of millions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    p: float  # pooled accuracy (or a difference of accuracies)
    lo: float  # 95% interval
    hi: float
    se: float  # standard error (two-way cluster-robust)
    n_eff: float  # effective number of independent observations
    n: int  # observations


NAN = Estimate(math.nan, math.nan, math.nan, math.nan, 0.0, 0)


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` (effective) observations."""
    if not n > 0 or math.isnan(p):
        return math.nan, math.nan
    z2 = z * z / n
    centre = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return (0.0 if p <= 0 else max(0.0, centre - half)), (1.0 if p >= 1 else min(1.0, centre + half))


def _moments_kernel(y: np.ndarray, samples: np.ndarray, valid: np.ndarray, out: np.ndarray) -> int:
    """One call for :func:`_residual_variance`: ``out`` = [N, mean, vd, vs, vi] of the observations ``y``
    [K, m] where ``valid`` [K, m] (an empty ``valid``: all), the residuals taken about their mean; returns
    the number of distinct samples (-1: a negative sample index)."""
    k, m = y.shape
    every = valid.size == 0
    n = 0
    tot = 0.0
    top = -1
    for i in range(k):
        for j in range(m):
            if every or valid[i, j]:
                n += 1
                tot += y[i, j]
                top = max(top, samples[i, j])
                if samples[i, j] < 0:
                    return -1
    mean = tot / n if n else 0.0
    per_sample = np.zeros(top + 1, dtype=np.float64)
    seen = np.zeros(top + 1, dtype=np.bool_)
    vd = 0.0
    vi = 0.0
    for i in range(k):
        row = 0.0
        for j in range(m):
            if every or valid[i, j]:
                e = y[i, j] - mean
                row += e
                vi += e * e
                per_sample[samples[i, j]] += e
                seen[samples[i, j]] = True
        vd += row * row
    vs = 0.0
    distinct = 0
    for s in range(top + 1):
        vs += per_sample[s] * per_sample[s]
        distinct += seen[s]
    out[0], out[1], out[2], out[3], out[4] = n, mean, vd, vs, vi
    return distinct


_moments = numba.njit(cache=True)(_moments_kernel) if numba is not None else None


def _residual_variance(
    y: np.ndarray, samples: np.ndarray, valid: np.ndarray | None
) -> tuple[int, float, float, int]:
    """(N, mean, V, distinct samples) of the observations ``y`` [K, m] (two-way, see the module docstring)."""
    if _moments is not None and y.size:
        out = np.zeros(5, dtype=np.float64)
        vmask = (
            np.zeros((0, 0), dtype=np.bool_) if valid is None else np.ascontiguousarray(valid, dtype=np.bool_)
        )
        distinct = _moments(np.ascontiguousarray(y), np.ascontiguousarray(samples), vmask, out)
        if distinct < 0:
            raise ValueError("sample indices must be non-negative")
        n = int(out[0])
        if n == 0:
            return 0, 0.0, 0.0, 0
        vd, vs, vi = float(out[2]), float(out[3]), float(out[4])
        return n, float(out[1]), max(vd + vs - vi, vd, vs) / (n * n), distinct
    yf = np.asarray(y, dtype=np.float64)
    vmask = np.ones(yf.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    n = int(vmask.sum())
    if n == 0:
        return 0, 0.0, 0.0, 0
    mean = float(yf[vmask].sum() / n)
    e = np.where(vmask, yf - mean, 0.0)
    v, distinct = _variance(e, samples, vmask, n)
    return n, mean, v, distinct


def _variance(e: np.ndarray, samples: np.ndarray, valid: np.ndarray, n: int) -> tuple[float, int]:
    """Two-way cluster-robust variance of the mean of residuals ``e`` [K, m] (zero where not valid), and the
    number of distinct samples."""
    vd = float(np.square(e.sum(axis=1)).sum())
    s = samples[valid]
    per_sample = np.bincount(s, weights=e[valid]) if len(s) else np.zeros(0)
    vs = float(np.square(per_sample).sum())
    vi = float(np.square(e).sum())
    distinct = int(np.count_nonzero(np.bincount(s))) if len(s) else 0
    return max(vd + vs - vi, vd, vs) / (n * n), distinct


def two_way(correct: np.ndarray, samples: np.ndarray, valid: np.ndarray | None = None) -> Estimate:
    """Pooled accuracy of ``correct`` [K, m] (devices x their test observations) with its 95% interval;
    ``samples`` [K, m] names the shared sample behind each observation (non-negative ints), ``valid`` masks
    padding (recorded fleets hold different numbers of test samples per device)."""
    y = np.asarray(correct)
    if y.dtype != np.bool_:
        y = y.astype(np.float64)
    if y.ndim == 1:
        y = y[None]
    samples = np.asarray(samples).reshape(y.shape)
    if samples.dtype not in (np.int32, np.int64):
        samples = samples.astype(np.int64)
    mask = None if valid is None else np.asarray(valid, dtype=bool).reshape(y.shape)
    n, p, v, distinct = _residual_variance(y, samples, mask)
    if n == 0:
        return NAN
    if v > 0 and 0 < p < 1:
        n_eff = min(float(n), p * (1 - p) / v)
    else:
        n_eff = float(min(n, max(distinct, 1)))
    lo, hi = wilson(p, n_eff)
    return Estimate(p, lo, hi, math.sqrt(v), n_eff, n)


def paired_se(
    correct_a: np.ndarray, correct_b: np.ndarray, samples: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Standard error of accuracy(a) - accuracy(b) measured on the same observations (paired: shared devices
    and samples cancel), two-way cluster-robust as :func:`two_way`."""
    d = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    if d.ndim == 1:
        d = d[None]
    samples = np.asarray(samples).reshape(d.shape)
    if samples.dtype not in (np.int32, np.int64):
        samples = samples.astype(np.int64)
    mask = None if valid is None else np.asarray(valid, dtype=bool).reshape(d.shape)
    n, _, v, _ = _residual_variance(d, samples, mask)
    return math.sqrt(v) if n else math.nan


def iid(correct: np.ndarray) -> Estimate:
    """Accuracy on independent samples (the clean factory test set): Wilson at n."""
    y = np.asarray(correct, dtype=np.float64).ravel()
    n = len(y)
    if not n:
        return NAN
    p = float(y.mean())
    lo, hi = wilson(p, n)
    return Estimate(p, lo, hi, math.sqrt(p * (1 - p) / n), float(n), n)
