"""Compiled sample draws of a generated fleet: :meth:`fedtiny.fleet.data.FleetData._draw`, fast.

The same counter-based hashes, class choice (cumulative class mix, float32 compare) and pool example choice
(float64 product, truncated) as the numpy code, so the pool rows are identical (``tests/test_fleet_draw.py``);
one pass per (device, sample) with no [K, n, C] temporaries, written as int32 rows (every pool has fewer than
2^31 rows; the caller checks). Falls back to numpy when numba is not importable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedtiny.ondevice.fast import worker_threads
from fedtiny.ondevice.shuffle import mix64

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S11 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


def tag_key(seed: int, tag: int) -> np.uint64:
    """The per-tag key of :func:`fedtiny.fleet.data.uniform`."""
    with np.errstate(over="ignore"):
        return np.uint64(mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ (np.uint64(tag) * _GOLDEN)))


def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _draw_kernel(
    k_cls: np.uint64,
    k_ex: np.uint64,
    devices: np.ndarray,
    j: np.ndarray,
    seg: np.ndarray,
    cmix: np.ndarray,
    variant: np.ndarray,
    lo: int,
    hi: int,
    pool_size: int,
    balanced: bool,
    out: np.ndarray,
) -> None:
    n_cls = cmix.shape[2]
    span = np.float64(hi - lo)
    for i in numba.prange(devices.shape[0]):
        d = devices[i]
        du = np.uint64(d)
        a_cls = _mix(k_cls ^ du)
        a_ex = _mix(k_ex ^ du)
        for t in range(j.shape[0]):
            ju = np.uint64(j[t])
            s = seg[t]
            if balanced:
                cls = j[t] % n_cls
            else:
                u = np.float32(np.float64(_mix(a_cls ^ ju) >> _S11) * _INV53)
                cm = cmix[s, d]
                cls = 0
                for c in range(n_cls):
                    if u >= cm[c]:
                        cls += 1
                cls = min(cls, n_cls - 1)
            p = lo + np.int64(np.float64(_mix(a_ex ^ ju) >> _S11) * _INV53 * span)
            out[i, t] = (np.int64(variant[s, d]) * n_cls + cls) * pool_size + p


_kernel: Callable[..., None] | None = None
if numba is not None:
    _mix = numba.njit(cache=True)(_mix)
    _kernel = numba.njit(cache=True, parallel=True)(_draw_kernel)


def draw_rows(
    seed: int,
    tag: int,
    devices: np.ndarray,
    j: np.ndarray,
    seg: np.ndarray,
    cmix: np.ndarray,
    variant: np.ndarray,
    lo: int,
    hi: int,
    pool_size: int,
    balanced: bool,
    rows: int,
) -> np.ndarray | None:
    """Pool rows int32 [K, n] of samples ``j`` [n] (segment ``seg`` [n]) of ``devices`` [K]; None without numba
    or when the pool (``rows`` rows) is too large for int32 (the caller uses numpy then)."""
    if _kernel is None or rows >= 2**31:
        return None
    dev = np.ascontiguousarray(devices, dtype=np.int64)
    out = np.empty((len(dev), len(j)), dtype=np.int32)
    prev = numba.get_num_threads()
    numba.set_num_threads(worker_threads())  # a Ray worker's share of the cores (OMP_NUM_THREADS)
    try:
        _kernel(
            tag_key(seed, tag),
            tag_key(seed, tag + 1),
            dev,
            np.ascontiguousarray(j, dtype=np.int64),
            np.ascontiguousarray(seg, dtype=np.int64),
            np.asarray(cmix),
            np.asarray(variant),
            int(lo),
            int(hi),
            int(pool_size),
            bool(balanced),
            out,
        )
    finally:
        numba.set_num_threads(prev)
    return out
