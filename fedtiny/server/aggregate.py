"""Validation of per-device float heads before aggregation: NaN/Inf, wrong shape or absurd norm are rejected
and counted. Aggregation itself is a Flower strategy with devices as its clients (fedtiny/server/strategy.py);
the caller re-quantizes its float head to int8 (the redeployed model is always the int8 quantization of the
aggregate).

The per-device checks are one compiled pass over each device's head (numba, devices spread over the cores):
no [K, C*D] temporaries, no float64 copy of the updates. The squared norm adds the float32 differences,
squared in float64, in index order (numpy summed them pairwise), so a norm differs from numpy's by a rounding
of about 1e-16 relative: only an update whose norm equals ``max_norm`` to 15 digits could be judged otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedtiny.ondevice.fast import update_norm_sq
from fedtiny.server.exact import weighted_rows

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]


@dataclass
class Validation:
    accepted: np.ndarray  # bool [K]
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return int((~self.accepted).sum())


def _stats_kernel(
    w: np.ndarray, b: np.ndarray, gw: np.ndarray, gb: np.ndarray, finite: np.ndarray, sq: np.ndarray
) -> None:
    """Per device ``i``: every entry finite, and the squared L2 norm of (w[i] - gw, b[i] - gb) in float64
    (:func:`fedtiny.ondevice.fast.update_norm_sq`, the check a gateway's fused kernel makes too)."""
    for i in numba.prange(w.shape[0]):
        finite[i], sq[i] = update_norm_sq(w[i], b[i], gw, gb)


_CHUNKS = 64  # fixed partial sums of the weighted mean: the bits do not depend on the thread count


def _mean_kernel(
    w: np.ndarray,
    b: np.ndarray,
    gw: np.ndarray,
    gb: np.ndarray,
    f: np.ndarray,
    sw: np.ndarray,
    sb: np.ndarray,
) -> None:
    """``sw[j] = sum over devices i of chunk j of f[i] * (w[i] - gw)`` in float64 (``sb`` the same for bias):
    devices in ``_CHUNKS`` fixed contiguous chunks, each summed in order, chunks summed by the caller."""
    k = w.shape[0]
    n_chunks = sw.shape[0]
    for j in numba.prange(n_chunks):
        lo, hi = j * k // n_chunks, (j + 1) * k // n_chunks
        swj, sbj = sw[j], sb[j]
        swj[:] = 0.0
        sbj[:] = 0.0
        for i in range(lo, hi):
            fi = f[i]
            wi, bi = w[i], b[i]
            for c in range(wi.shape[0]):
                wc, gc, sc = wi[c], gw[c], swj[c]
                for d in range(wc.shape[0]):
                    sc[d] += fi * (np.float64(wc[d]) - np.float64(gc[d]))
            for c in range(bi.shape[0]):
                sbj[c] += fi * (np.float64(bi[c]) - np.float64(gb[c]))


_stats: Callable[..., None] | None = None
_mean: Callable[..., None] | None = None
if numba is not None:
    _stats = numba.njit(cache=True, parallel=True)(_stats_kernel)
    _mean = numba.njit(cache=True, parallel=True)(_mean_kernel)


def weighted_delta(
    w: np.ndarray, b: np.ndarray, global_w: np.ndarray, global_b: np.ndarray, f: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``sum_i f[i] * (w[i] - global_w)`` and the same for the bias, in float64, without a float64 copy of the
    updates (a million devices' heads are 2.6 GB in float32)."""
    gw = np.ascontiguousarray(global_w, dtype=np.float64)
    gb = np.ascontiguousarray(global_b, dtype=np.float64)
    f = np.ascontiguousarray(f, dtype=np.float64)
    if _mean is None:  # pragma: no cover - devices added in order (no BLAS: its order depends on the CPU)
        return weighted_rows(f, w.astype(np.float64) - gw), weighted_rows(f, b.astype(np.float64) - gb)
    n_chunks = max(1, min(_CHUNKS, len(f)))
    sw = np.empty((n_chunks, *gw.shape), dtype=np.float64)
    sb = np.empty((n_chunks, *gb.shape), dtype=np.float64)
    _mean(np.ascontiguousarray(w), np.ascontiguousarray(b), gw, gb, f, sw, sb)
    # the chunks in order: a reduction along the first axis is a sequential loop over it (the same bits on any
    # CPU and thread count; the kernel is compiled without fastmath, so LLVM neither reorders nor fuses)
    return np.add.reduce(sw, axis=0), np.add.reduce(sb, axis=0)


def update_stats(
    w: np.ndarray, b: np.ndarray, global_w: np.ndarray, global_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(finite bool [K], squared update norm float64 [K]) of heads ``w`` [K, C, D], ``b`` [K, C] from the global
    head (shapes already checked). The differences are taken in the wider of the two dtypes (float32 heads
    from a float32 global: float32, as numpy's ``w - global_w``; from a float64 global: float64)."""
    k = w.shape[0]
    gw = np.ascontiguousarray(global_w, dtype=np.result_type(w.dtype, global_w.dtype))
    gb = np.ascontiguousarray(global_b, dtype=np.result_type(b.dtype, global_b.dtype))
    if _stats is None:  # pragma: no cover
        finite = np.isfinite(w).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            dw, db = (w - gw).reshape(k, -1).astype(np.float64), (b - gb).astype(np.float64)
            return finite, (dw**2).sum(axis=1) + (db**2).sum(axis=1)
    finite = np.empty(k, dtype=np.bool_)
    sq = np.empty(k, dtype=np.float64)
    _stats(np.ascontiguousarray(w), np.ascontiguousarray(b), gw, gb, finite, sq)
    return finite, sq


def in_device_order(blocks: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Concatenate per-gateway blocks ``(weights, bias, device_ids, ...)`` (every array's first axis is the
    block's devices; ``device_ids`` third) into one set ordered by device id, with as few copies as possible:
    blocks are taken in the order of their first device id, so gateways that serve contiguous, ascending
    device ranges (fedtiny's layout) need one concatenation and no re-ordering copy, and a single block is
    returned as it is; otherwise a stable argsort re-orders (replies out of order, interleaved devices)."""
    blocks = sorted(blocks, key=lambda blk: int(blk[2][0]) if len(blk[2]) else 0)
    out = blocks[0] if len(blocks) == 1 else tuple(np.concatenate(x) for x in zip(*blocks))
    ids = out[2]
    if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
        order = np.argsort(ids, kind="stable")
        out = tuple(x[order] for x in out)
    return out


def validate_updates(
    w: np.ndarray, b: np.ndarray, global_w: np.ndarray, global_b: np.ndarray, max_norm: float
) -> Validation:
    """Accept an update only if it is finite, has the head's shape and a plausible norm."""
    k = w.shape[0]
    if (
        w.ndim != 3
        or b.ndim != 2
        or w.shape[1:] != global_w.shape
        or b.shape[1:] != global_b.shape
        or b.shape[0] != k
    ):
        return Validation(np.zeros(k, dtype=bool), {"wrong_shape": k})
    finite, sq = update_stats(w, b, global_w, global_b)
    with np.errstate(invalid="ignore"):
        sane = finite & (np.sqrt(sq) <= max_norm)
    return Validation(
        sane, {"non_finite": int((~finite).sum()), "norm_too_large": int((finite & ~sane).sum())}
    )
