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
result is deterministic. Outcomes are 0/1 (or differences of them), so the compiled path takes exact integer
sums in one parallel pass (devices split over the cores: integers do not depend on the split) and expands V
in Python integers (:func:`_exact`): the only rounding is the final division, and every group of a fleet
comes out of the same pass (:func:`two_way_by_group`), which matters at a million devices where every round
evaluates tens of millions of observations. Non-integer observations take two compiled float64 passes; the
numpy expressions are the fallback and the reference (equal up to float64 rounding).
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
    exact = _exact(y, samples, valid, np.zeros(y.shape[0], dtype=np.int64), 0) if y.size else None
    if exact is not None:
        return exact[0]
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
    if not _integer(y):
        y = y.astype(np.float64)
    if y.ndim == 1:
        y = y[None]
    samples = np.asarray(samples).reshape(y.shape)
    if samples.dtype not in (np.int32, np.int64):
        samples = samples.astype(np.int64)
    mask = None if valid is None else np.asarray(valid, dtype=bool).reshape(y.shape)
    return _estimate(*_residual_variance(y, samples, mask))


def _integer(y: np.ndarray) -> bool:
    return y.dtype == np.bool_ or bool(np.issubdtype(y.dtype, np.integer))


def _counts_kernel(
    y: np.ndarray,
    lookup: np.ndarray,
    samples: np.ndarray,
    valid: np.ndarray,
    group: np.ndarray,
    tot: np.ndarray,
    c_s: np.ndarray,
    n_s: np.ndarray,
    bad: np.ndarray,
) -> None:
    """Integer sums of integer observations ``y`` [K, m] in one pass, devices split into ``tot.shape[0]``
    contiguous parts that run in parallel (integer sums: the result does not depend on the split). Per part
    ``q`` and row ``g`` (0: every device, g + 1: devices with ``group[i] == g``): ``tot[q, g]`` = [N, sum y,
    sum y^2, sum r_i^2, sum r_i m_i, sum m_i^2] (``r_i``, ``m_i``: device i's sum and count), and per sample
    ``c_s[q, g, s]`` = sum y, ``n_s[q, g, s]`` = count. ``bad[q]`` = 1: a sample index outside [0, top].
    A non-empty ``lookup`` gives every observation as ``lookup[sample]`` (``y`` is not read)."""
    k, m = samples.shape
    pooled = lookup.size > 0
    parts, n_rows, width = tot.shape[0], tot.shape[1], c_s.shape[2]
    every = valid.size == 0
    for q in numba.prange(parts):
        tq, cq, nq = tot[q], c_s[q], n_s[q]
        for i in range(q * k // parts, (q + 1) * k // parts):
            g = group[i] + 1
            inside = 0 < g < n_rows
            r = np.int64(0)
            cnt = np.int64(0)
            sq = np.int64(0)
            for j in range(m):
                if every or valid[i, j]:
                    s = samples[i, j]
                    if s < 0 or s >= width:
                        bad[q] = 1
                        continue
                    v = np.int64(lookup[s]) if pooled else np.int64(y[i, j])
                    r += v
                    cnt += 1
                    sq += v * v
                    cq[0, s] += v
                    nq[0, s] += 1
                    if inside:
                        cq[g, s] += v
                        nq[g, s] += 1
            tq[0, 0] += cnt
            tq[0, 1] += r
            tq[0, 2] += sq
            tq[0, 3] += r * r
            tq[0, 4] += r * cnt
            tq[0, 5] += cnt * cnt
            if inside:
                tq[g, 0] += cnt
                tq[g, 1] += r
                tq[g, 2] += sq
                tq[g, 3] += r * r
                tq[g, 4] += r * cnt
                tq[g, 5] += cnt * cnt


_counts = numba.njit(cache=True, parallel=True)(_counts_kernel) if numba is not None else None


def _exact(
    y: np.ndarray,
    samples: np.ndarray,
    valid: np.ndarray | None,
    group: np.ndarray,
    groups: int,
    lookup: np.ndarray | None = None,
) -> list[tuple[int, float, float, int]] | None:
    """(N, mean, V, distinct samples) of every observation and of each group's (rows 0, 1 .. ``groups``) from
    exact integer sums: with S = sum y, N^2 V = max(Dd + Ds - Di, Dd, Ds) / N^2 where N^2 Dd = N^2 sum r_i^2
    - 2 S N sum r_i m_i + S^2 sum m_i^2 (devices), the same over samples (Ds), and N^2 Di = N^2 sum y^2 - N S^2
    (the module docstring's V with e = y - S / N expanded), in Python integers: no rounding until the one
    division. None when ``y`` is not integer-valued or numba is missing (the caller takes the float path).
    With ``lookup`` (integer-valued, one per sample), the observations are ``lookup[samples]`` and ``y`` is
    ignored."""
    if _counts is None or not _integer(y if lookup is None else lookup):
        return None
    smp = np.ascontiguousarray(samples)
    if smp.dtype not in (np.int32, np.int64):
        smp = smp.astype(np.int64)
    top = int(smp.max()) if smp.size else 0
    if top < 0:
        raise ValueError("sample indices must be non-negative")
    parts = max(1, min(int(numba.get_num_threads()), smp.shape[0]))
    rows = groups + 1
    if parts * rows * (top + 1) > 20_000_000:  # per-sample sums too large to hold per part: one part
        parts = 1
    tot = np.zeros((parts, rows, 6), dtype=np.int64)
    c_s = np.zeros((parts, rows, top + 1), dtype=np.int64)
    n_s = np.zeros((parts, rows, top + 1), dtype=np.int64)
    vmask = np.zeros((0, 0), dtype=np.bool_) if valid is None else np.ascontiguousarray(valid, dtype=np.bool_)
    if lookup is not None and len(lookup) <= top:
        raise ValueError(f"sample indices must be below {len(lookup)} (the samples looked up)")
    yy = np.ascontiguousarray(y.view(np.int8) if y.dtype == np.bool_ else y)
    lk = np.zeros(0, np.int8) if lookup is None else np.ascontiguousarray(lookup)
    lk = lk.view(np.int8) if lk.dtype == np.bool_ else lk
    bad = np.zeros(parts, dtype=np.int64)
    _counts(yy, lk, smp, vmask, np.ascontiguousarray(group, dtype=np.int64), tot, c_s, n_s, bad)
    if bad.any():
        raise ValueError("sample indices must be non-negative")
    t, cs, ns = tot.sum(axis=0), c_s.sum(axis=0), n_s.sum(axis=0)
    out = []
    for g in range(rows):
        n, s, q, a, b, c = (int(x) for x in t[g])
        if n == 0:
            out.append((0, 0.0, 0.0, 0))
            continue
        # int64 dot products: numpy's own integer loop (not BLAS), exact: the same bits on every CPU
        d, e, f = int(cs[g] @ cs[g]), int(cs[g] @ ns[g]), int(ns[g] @ ns[g])
        vd = n * n * a - 2 * s * n * b + s * s * c
        vs = n * n * d - 2 * s * n * e + s * s * f
        vi = n * n * q - n * s * s
        out.append((n, s / n, max(vd + vs - vi, vd, vs) / n**4, int(np.count_nonzero(ns[g]))))
    return out


def _estimate(n: int, p: float, v: float, distinct: int) -> Estimate:
    """The estimate of :func:`two_way` from (N, mean, V, distinct samples)."""
    if n == 0:
        return NAN
    if v > 0 and 0 < p < 1:
        n_eff = min(float(n), p * (1 - p) / v)
    else:
        n_eff = float(min(n, max(distinct, 1)))
    lo, hi = wilson(p, n_eff)
    return Estimate(p, lo, hi, math.sqrt(v), n_eff, n)


def two_way_by_group(
    correct: np.ndarray | None,
    samples: np.ndarray,
    group: np.ndarray,
    groups: int,
    valid: np.ndarray | None = None,
    pool_correct: np.ndarray | None = None,
) -> tuple[Estimate, dict[int, Estimate]]:
    """:func:`two_way` of all of ``correct`` [K, m] and of each group ``g`` in ``range(groups)`` that has a
    device (``group`` [K]), in one compiled pass: at a million devices every round evaluates tens of millions
    of observations, once instead of once per group. ``pool_correct`` (one outcome per sample) instead of
    ``correct``: the observations are ``pool_correct[samples]``, never gathered into a [K, m] array."""
    smp = np.asarray(samples)
    grp = np.asarray(group, dtype=np.int64)
    present = [g for g in range(groups) if (grp == g).any()]
    if len(present) == 1 and bool((grp == present[0]).all()):  # one group of every device: the same estimate
        every, _ = two_way_by_group(correct, smp, np.full(len(grp), -1), 0, valid, pool_correct)
        return every, {present[0]: every}
    lookup = None if pool_correct is None else np.asarray(pool_correct)
    if smp.ndim == 2 and smp.size:
        y_in = np.zeros((0, 0), np.int8) if lookup is not None else np.asarray(correct).reshape(smp.shape)
        mask = None if valid is None else np.asarray(valid, dtype=bool).reshape(smp.shape)
        res = _exact(y_in, smp, mask, grp, groups, lookup)
        if res is not None:
            return _estimate(*res[0]), {g: _estimate(*res[g + 1]) for g in present}
    y = np.asarray(correct) if lookup is None else lookup[smp]  # float outcomes, or no numba
    return two_way(y, smp, valid), {
        g: two_way(y[grp == g], smp[grp == g], None if valid is None else np.asarray(valid)[grp == g])
        for g in present
    }


def paired_se(
    correct_a: np.ndarray, correct_b: np.ndarray, samples: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Standard error of accuracy(a) - accuracy(b) measured on the same observations (paired: shared devices
    and samples cancel), two-way cluster-robust as :func:`two_way`."""
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    wide = np.int64 if _integer(a) and _integer(b) else np.float64  # 0/1 outcomes: exact integer sums
    d = a.astype(wide) - b.astype(wide)
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
