"""A compiled per-device head trainer: :func:`fedtiny.ondevice.train.train_heads`, fast.

Same arguments, sample order (the counter-based hash of docs/ondevice.md §3), batching, momentum, weight
decay, FedProx, per-device ``counts``, loss **and bits** as the numpy spec, which stays the readable reference:
each device is one loop over its own tiny matrices (numba, float32, devices spread over the cores) computing the
spec's float32 operations in the spec's order, never fastmath (no reassociation, no fused multiply-add), with the
spec's own exp and log (:mod:`fedtiny.ondevice.fmath`). Speed comes from SIMD lanes that never share a sum: the
forward pass keeps eight samples by two classes of independent sums (each over d in order) that LLVM's SLP
vectorizer packs into registers, the backward pass vectorizes over the feature axis (each entry adds the batch
in order). So the bits depend neither on the CPU target nor on the number of threads.

Threads: numba's thread pool, capped at ``OMP_NUM_THREADS`` when that is set (Ray sets it to a worker's
``num_cpus``), so two Ray workers on two cores do not each run two threads.

Compilation is cached on disk (``cache=True``, in ``__pycache__`` or ``NUMBA_CACHE_DIR``): the first call in
a fresh checkout compiles for a few seconds, later processes load the cached machine code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice import fmath
from fedtiny.ondevice.shuffle import stream_key
from fedtiny.ondevice.train import TrainConfig, TrainJob, TrainResult, train_heads

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this only keeps a broken install working
    numba = None  # type: ignore[assignment]

HAVE_NUMBA = numba is not None
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf propagate as in the spec
_BLOCK = 32  # devices per parallel work item (scratch buffers are allocated once per block)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


def _mix(z: np.uint64) -> np.uint64:
    """splitmix64 finalizer on one uint64 (wrapping), as :func:`fedtiny.ondevice.shuffle.mix64`."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


_RANK_SORT_MAX = 256  # up to this many samples the O(n^2) rank sort beats a merge sort
_SIGN = np.uint64(0x8000000000000000)


def _order(key: np.uint64, n: int, order: np.ndarray, sk: np.ndarray) -> None:
    """``order[:n]`` = slots 0..n-1 sorted by ``mix(key ^ (slot + 1) * GOLDEN)``, stable (as the spec's argsort).

    The keys of one call are all distinct (``(slot + 1) * GOLDEN`` is a bijection for an odd GOLDEN, and so
    are the xor and ``mix``), so stability never matters: small caches by rank, slot s goes to the number of
    keys below its own (branch-free compares that vectorize; the keys xored with the sign bit compare as
    int64 in the same order, and AVX2 has only a signed 64-bit compare); larger ones with a merge sort.
    """
    for s in range(n):
        sk[s] = _mix(key ^ ((np.uint64(s) + np.uint64(1)) * _GOLDEN))
    if n > _RANK_SORT_MAX:
        order[:n] = np.argsort(sk[:n], kind="mergesort")
        return
    ss = sk.view(np.int64)
    for s in range(n):
        ss[s] = np.int64(sk[s] ^ _SIGN)
    for s in range(n):
        ks = ss[s]
        r = 0
        for t in range(n):
            r += ss[t] < ks
        order[r] = s


_EXP_LO, _LOG2E, _LN2_HI, _LN2_LO = fmath.EXP_LO, fmath.LOG2E, fmath.LN2_HI, fmath.LN2_LO
_E0, _E1, _E2, _E3, _E4, _E5 = fmath.EXP_POLY
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = fmath.LOG_POLY
_SQRT_HALF = fmath.SQRT_HALF


def _f32_to_bits_plain(x: np.float32) -> np.int32:
    """The int32 bits of the float32 ``x`` (a numba intrinsic below; this is the plain fallback)."""
    return np.float32(x).view(np.int32)


def _bits_to_f32_plain(bits: np.int32) -> np.float32:
    """The float32 whose bits are the int32 ``bits`` (a numba intrinsic below; this is the plain fallback)."""
    return np.int32(bits).view(np.float32)


_f32_to_bits: Callable[[np.float32], np.int32] = _f32_to_bits_plain
_bits_to_f32: Callable[[np.int32], np.float32] = _bits_to_f32_plain


def _exp1(v: np.float32) -> np.float32:
    """:func:`fedtiny.ondevice.fmath.exp_f32` of one float32 (the same operations in the same order)."""
    v = _EXP_LO if v < _EXP_LO else v
    fk: np.float32 = np.floor(v * _LOG2E + np.float32(0.5))
    r = (v - fk * _LN2_HI) - fk * _LN2_LO
    fk = fk if fk >= np.float32(-126.0) else np.float32(-126.0)  # NaN: any valid exponent
    p = _E0
    p = p * r + _E1
    p = p * r + _E2
    p = p * r + _E3
    p = p * r + _E4
    p = p * r + _E5
    e = ((p * r) * r + r) + np.float32(1.0)
    return e * _bits_to_f32((np.int32(fk) + np.int32(127)) << np.int32(23))


def _log1(x: np.float32) -> np.float32:
    """:func:`fedtiny.ondevice.fmath.log_f32` of one float32 (the same operations in the same order)."""
    bits = _f32_to_bits(x)
    ex = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    mant = _bits_to_f32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000))
    if mant < _SQRT_HALF:
        fe = np.float32(ex - np.int32(1))
        t = (mant + mant) - np.float32(1.0)
    else:
        fe = np.float32(ex)
        t = mant - np.float32(1.0)
    z = t * t
    y = _L0
    y = y * t + _L1
    y = y * t + _L2
    y = y * t + _L3
    y = y * t + _L4
    y = y * t + _L5
    y = y * t + _L6
    y = y * t + _L7
    y = y * t + _L8
    y = (y * t) * z
    y = y + fe * _LN2_LO
    y = y - np.float32(0.5) * z
    res = (t + y) + fe * _LN2_HI
    if not (x >= np.float32(1.17549435e-38)):
        res = np.float32(np.nan)
    if x == np.float32(np.inf) or x != x:
        res = x
    return res


#: verdicts of :func:`train_pooled_sums` per device (the server's rejection reasons, fedtiny/server/aggregate.py)
ACCEPTED, NON_FINITE, NORM_TOO_LARGE = 0, 1, 2


def update_norm_sq(wi: np.ndarray, bi: np.ndarray, gw: np.ndarray, gb: np.ndarray) -> tuple[bool, float]:
    """(every entry finite, squared L2 norm of (wi - gw, bi - gb) in float64, summed in index order) of one
    head: the server's per-update check (fedtiny/server/aggregate.py) and the fused kernel's, compiled once.
    The difference is taken in the wider of the two dtypes, then squared in float64."""
    ok = True
    acc = 0.0
    for c in range(wi.shape[0]):
        for d in range(wi.shape[1]):
            x = wi[c, d]
            ok &= np.isfinite(x)
            t = np.float64(x - gw[c, d])
            acc += t * t
    for c in range(bi.shape[0]):
        x = bi[c]
        ok &= np.isfinite(x)
        t = np.float64(x - gb[c])
        acc += t * t
    return ok, acc


def _check_add(
    wi: np.ndarray,
    bi: np.ndarray,
    g32w: np.ndarray,
    g32b: np.ndarray,
    g64w: np.ndarray,
    g64b: np.ndarray,
    weight: float,
    max_norm: float,
    clip: float,
    sw: np.ndarray,
    sb: np.ndarray,
) -> int:
    """The server's checks of one trained head (fedtiny/server/aggregate.py, ``validate_updates``: finite, and
    the norm of its float32 difference from the global head at most ``max_norm``); if it passes, fedtiny's
    clipping (the float64 difference's norm against ``clip``) and ``sw``/``sb`` += weight * scale * (w - g) in
    float64. Compiled without fastmath: the same float64 expressions, summed in index order, as there."""
    ok, sq = update_norm_sq(wi, bi, g32w, g32b)
    if not ok:
        return NON_FINITE
    if not np.sqrt(sq) <= max_norm:
        return NORM_TOO_LARGE
    f = weight
    if clip > 0:
        _, sq = update_norm_sq(wi, bi, g64w, g64b)
        f = weight * min(1.0, clip / max(np.sqrt(sq), 1e-12))
    for c in range(wi.shape[0]):
        for d in range(wi.shape[1]):
            sw[c, d] += f * (np.float64(wi[c, d]) - g64w[c, d])
    for c in range(bi.shape[0]):
        sb[c] += f * (np.float64(bi[c]) - g64b[c])
    return ACCEPTED


def _forward(wi: np.ndarray, xt: np.ndarray, zt: np.ndarray, n_cls: int, dim: int, m: int) -> None:
    """The forward pass of one step: ``zt[c, j] = sum over d in order of wi[c, d] * x_j[d]`` (the bias is added
    after) for the ``m`` samples of the batch, whose features are ``xt[j // 8, d, j % 8]`` (groups of eight
    samples, padding lanes zero). Eight samples by two classes per pass over the features: sixteen independent
    sums, each in the spec's order over d, that LLVM's SLP vectorizer packs into SIMD registers. The group's
    eight lanes are literal indices so that their loads are provably adjacent (with a computed column index
    numba's negative-index handling hides that, and the same code ran 5x slower)."""
    zero = np.float32(0.0)
    for jb in range((m + 7) // 8):
        xg = xt[jb]
        j = jb * 8
        c = 0
        while c < n_cls:
            c2 = c + 1 if c + 1 < n_cls else c  # an odd last class is computed twice
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
            e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = zero
            for d in range(dim):
                wa = wi[c, d]
                wb = wi[c2, d]
                x0 = xg[d, 0]
                x1 = xg[d, 1]
                x2 = xg[d, 2]
                x3 = xg[d, 3]
                x4 = xg[d, 4]
                x5 = xg[d, 5]
                x6 = xg[d, 6]
                x7 = xg[d, 7]
                a0 = a0 + wa * x0
                a1 = a1 + wa * x1
                a2 = a2 + wa * x2
                a3 = a3 + wa * x3
                a4 = a4 + wa * x4
                a5 = a5 + wa * x5
                a6 = a6 + wa * x6
                a7 = a7 + wa * x7
                e0 = e0 + wb * x0
                e1 = e1 + wb * x1
                e2 = e2 + wb * x2
                e3 = e3 + wb * x3
                e4 = e4 + wb * x4
                e5 = e5 + wb * x5
                e6 = e6 + wb * x6
                e7 = e7 + wb * x7
            zt[c, j + 0] = a0
            zt[c, j + 1] = a1
            zt[c, j + 2] = a2
            zt[c, j + 3] = a3
            zt[c, j + 4] = a4
            zt[c, j + 5] = a5
            zt[c, j + 6] = a6
            zt[c, j + 7] = a7
            zt[c2, j + 0] = e0
            zt[c2, j + 1] = e1
            zt[c2, j + 2] = e2
            zt[c2, j + 3] = e3
            zt[c2, j + 4] = e4
            zt[c2, j + 5] = e5
            zt[c2, j + 6] = e6
            zt[c2, j + 7] = e7
            c += 2


def _to_groups(xb: np.ndarray, xt: np.ndarray, m: int, dim: int) -> None:
    """``xt[g, d, q] = xb[8 g + q, d]``: the batch's rows regrouped for :func:`_forward` (a copy, the same bits).
    Literal lane indices again, so the eight values of a (group, feature) become one SIMD store."""
    for g in range((m + 7) // 8):
        xg = xt[g]
        j = g * 8
        for d in range(dim):
            xg[d, 0] = xb[j + 0, d]
            xg[d, 1] = xb[j + 1, d]
            xg[d, 2] = xb[j + 2, d]
            xg[d, 3] = xb[j + 3, d]
            xg[d, 4] = xb[j + 4, d]
            xg[d, 5] = xb[j + 5, d]
            xg[d, 6] = xb[j + 6, d]
            xg[d, 7] = xb[j + 7, d]


def _backward(
    zt: np.ndarray, xb: np.ndarray, gw: np.ndarray, gb: np.ndarray, n_cls: int, dim: int, m: int
) -> None:
    """The batch gradient: ``gw[c, d]`` = the sum, from +0 in sample order, of ``zt[c, j] * xb[j, d]``, and
    ``gb[c]`` the sum of ``zt[c, j]``. Eight samples per pass over a gradient row (loaded and stored once per
    eight), vectorized over d: each lane is one entry's own sum, in the spec's order."""
    zero = np.float32(0.0)
    for c in range(n_cls):
        s = zero
        for j in range(m):
            s = s + zt[c, j]
        gb[c] = s
        gr = gw[c]
        for d in range(dim):
            gr[d] = zero
        j = 0
        while j + 8 <= m:
            g0, g1, g2, g3 = zt[c, j], zt[c, j + 1], zt[c, j + 2], zt[c, j + 3]
            g4, g5, g6, g7 = zt[c, j + 4], zt[c, j + 5], zt[c, j + 6], zt[c, j + 7]
            x0, x1, x2, x3 = xb[j], xb[j + 1], xb[j + 2], xb[j + 3]
            x4, x5, x6, x7 = xb[j + 4], xb[j + 5], xb[j + 6], xb[j + 7]
            for d in range(dim):
                v = ((gr[d] + g0 * x0[d]) + g1 * x1[d]) + g2 * x2[d]
                v = (((v + g3 * x3[d]) + g4 * x4[d]) + g5 * x5[d]) + g6 * x6[d]
                gr[d] = v + g7 * x7[d]
            j += 8
        while j < m:
            g0 = zt[c, j]
            x0 = xb[j]
            for d in range(dim):
                gr[d] = gr[d] + g0 * x0[d]
            j += 1


def _train_kernel(
    w_init: np.ndarray,
    b_init: np.ndarray,
    pool: np.ndarray,
    plabels: np.ndarray,
    idx: np.ndarray,
    slabels: np.ndarray,
    sweights: np.ndarray,
    counts: np.ndarray,
    keys: np.ndarray,
    bsz: int,
    lr: np.float32,
    mom: np.float32,
    wd: np.float32,
    mu: np.float32,
    scale: np.float32,
    zp: np.float32,
    w_out: np.ndarray,
    b_out: np.ndarray,
    loss_out: np.ndarray,
    steps_out: np.ndarray,
    weights: np.ndarray,
    g64w: np.ndarray,
    g64b: np.ndarray,
    max_norm: float,
    clip: float,
    sum_w: np.ndarray,
    sum_b: np.ndarray,
    verdict_out: np.ndarray,
) -> None:
    """SGD of docs/ondevice.md §3 on every device, writing ``w_out`` [K, C, D] and ``b_out`` [K, C] (float32);
    or, when ``sum_w`` [blocks, C, D] is not empty (``w_out`` then is), each trained head checked and added into
    its block's float64 sums by :func:`_check_add` (``verdict_out``), no per-device head written.

    Device ``i`` starts from ``w_init[i]`` (or ``w_init[0]`` when one head is shared) and its cache slot
    ``s`` is pool row ``idx[i, s]`` with label ``plabels[idx[i, s]]``, or ``slabels[i, s]`` when ``slabels``
    [K, N] is not empty: the features are gathered and dequantized straight into the batch (no [K, N, D] copy).
    When ``sweights`` [K, N] is not empty, slot ``s``'s gradient is multiplied by ``sweights[i, s]`` (after
    the division by the batch size, skipped for a weight of 1: docs/ondevice.md §3). Per step, in
    docs/ondevice.md §3's order: the batch's rows regrouped eight samples at a time (:func:`_to_groups`), the
    forward pass (:func:`_forward`), the bias, softmax and loss with the spec's exp and log (:func:`_exp1`,
    :func:`_log1`, one log per sample), the gradient weights, the batch gradient (:func:`_backward`), weight
    decay, FedProx, momentum and the update. A row or label out of range
    marks the device with ``steps_out[i] = -1`` (the caller raises) instead of reading out of bounds.
    """
    k = idx.shape[0]
    n_cls, dim = w_out.shape[1], w_out.shape[2]
    cap = idx.shape[1]
    epochs = keys.shape[1]
    shared = w_init.shape[0] == 1
    n_rows = pool.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    n_blocks = (k + _BLOCK - 1) // _BLOCK
    summing = sum_w.shape[0] > 0
    per_slot = slabels.shape[0] > 0
    weighted = sweights.shape[0] > 0
    bsp = (
        bsz + (-bsz) % 8
    )  # sample lanes padded to a multiple of 8 (padding lanes hold zeros, never read back)
    for blk in numba.prange(n_blocks):
        order = np.empty(cap, dtype=np.int64)
        sk = np.empty(cap, dtype=np.uint64)
        xb = np.empty((bsp, dim), dtype=np.float32)  # the batch, one sample per row (backward pass)
        xt = np.zeros((bsp // 8, dim, 8), dtype=np.float32)  # the same in groups of 8 samples (forward pass)
        zt = np.empty((n_cls, bsp), dtype=np.float32)  # logits, then exponentials, then gradients [c, j]
        ys = np.empty(bsz, dtype=np.int64)
        wts = np.empty(bsz, dtype=np.float32)
        mx = np.empty(bsz, dtype=np.float32)
        ssum = np.empty(bsz, dtype=np.float32)
        lj = np.empty(bsz, dtype=np.float32)
        gw = np.empty((n_cls, dim), dtype=np.float32)
        gb = np.empty(n_cls, dtype=np.float32)
        vw = np.empty((n_cls, dim), dtype=np.float32)
        vb = np.empty(n_cls, dtype=np.float32)
        w_tmp = np.empty((n_cls, dim), dtype=np.float32)  # the head being trained, when summing
        b_tmp = np.empty(n_cls, dtype=np.float32)
        if summing:
            sum_w[blk] = 0.0
            sum_b[blk] = 0.0
        for i in range(blk * _BLOCK, min(k, (blk + 1) * _BLOCK)):
            n = min(max(counts[i], 0), cap)
            src = 0 if shared else i
            wi = w_tmp if summing else w_out[i]
            bi = b_tmp if summing else b_out[i]
            w0 = w_init[src]
            b0 = b_init[src]
            wi[:] = w0
            bi[:] = b0
            if mom > 0:
                vw[:] = 0
                vb[:] = 0
            # touch the device's rows and labels once in slot order: independent loads whose cache misses
            # overlap, where the shuffled gather of the first epoch would wait for them (1.2x at 20k devices)
            warm = 0
            for slot in range(n):
                r = idx[i, slot]
                if r >= 0 and r < n_rows and dim > 0:
                    warm += pool[r, 0] + pool[r, dim - 1]
                    if per_slot:
                        warm += slabels[i, slot]
                    else:
                        warm += plabels[r]
            ys[0] = warm  # kept, so the loads are not dropped as dead code
            loss_sum = 0.0
            steps = 0
            bad = False
            for e in range(epochs):
                if bad:
                    break
                _order(keys[i, e], n, order, sk)
                for t0 in range(0, n, bsz):
                    m = min(bsz, n - t0)
                    inv_m = one / np.float32(m)
                    for j in range(m):
                        slot = order[t0 + j]
                        r = idx[i, slot]
                        if r < 0 or r >= n_rows:
                            bad = True
                            break
                        if per_slot:
                            y = np.int64(slabels[i, slot])
                        else:
                            y = np.int64(plabels[r])
                        if y < 0 or y >= n_cls:
                            bad = True
                            break
                        ys[j] = y
                        if weighted:
                            wts[j] = sweights[i, slot]
                        for d in range(dim):
                            xb[j, d] = (np.float32(pool[r, d]) - zp) * scale
                    if bad:
                        break
                    for j in range(m, bsp):  # padding lanes: zeros
                        for d in range(dim):
                            xb[j, d] = zero
                    _to_groups(xb, xt, m, dim)
                    _forward(wi, xt, zt, n_cls, dim, m)
                    for c in range(n_cls):
                        bc = bi[c]
                        for j in range(m):
                            zt[c, j] = zt[c, j] + bc
                    # softmax and loss (docs/ondevice.md §3): running max, exp of the shifted logits, their sum
                    # in class order, log of the sum
                    for j in range(m):
                        mx[j] = zt[0, j]
                        ssum[j] = zero
                    for c in range(1, n_cls):
                        for j in range(m):
                            v = zt[c, j]
                            mx[j] = v if v > mx[j] else mx[j]
                    for j in range(m):
                        lj[j] = zt[ys[j], j] - mx[j]
                    for c in range(n_cls):
                        for j in range(m):
                            v = _exp1(zt[c, j] - mx[j])
                            zt[c, j] = v
                            ssum[j] = ssum[j] + v
                    for j in range(m):
                        lj[j] = _log1(ssum[j]) - lj[j]
                    for j in range(m):
                        loss_sum += np.float64(lj[j])
                    for c in range(n_cls):
                        for j in range(m):
                            zt[c, j] = zt[c, j] / ssum[j]
                    for j in range(m):
                        zt[ys[j], j] = zt[ys[j], j] - one
                    for c in range(n_cls):
                        for j in range(m):
                            zt[c, j] = zt[c, j] * inv_m
                    if weighted:  # a sample's gradient times its weight (one float32 multiply; 1 is skipped)
                        for j in range(m):
                            wj = wts[j]
                            if wj != one:
                                for c in range(n_cls):
                                    zt[c, j] = zt[c, j] * wj
                    _backward(zt, xb, gw, gb, n_cls, dim, m)
                    if wd > 0:
                        for c in range(n_cls):
                            for d in range(dim):
                                gw[c, d] = gw[c, d] + wd * wi[c, d]
                    if mu > 0:
                        for c in range(n_cls):
                            for d in range(dim):
                                gw[c, d] = gw[c, d] + mu * (wi[c, d] - w0[c, d])
                            gb[c] = gb[c] + mu * (bi[c] - b0[c])
                    if mom > 0:
                        for c in range(n_cls):
                            for d in range(dim):
                                v = mom * vw[c, d] + gw[c, d]
                                vw[c, d] = v
                                gw[c, d] = v
                            vb[c] = mom * vb[c] + gb[c]
                            gb[c] = vb[c]
                    for c in range(n_cls):
                        for d in range(dim):
                            wi[c, d] = wi[c, d] - lr * gw[c, d]
                        bi[c] = bi[c] - lr * gb[c]
                    steps += 1
            loss_out[i] = loss_sum / max(n * epochs, 1)
            steps_out[i] = -1 if bad else steps
            if summing:
                verdict_out[i] = _check_add(
                    wi, bi, w0, b0, g64w, g64b, weights[i], max_norm, clip, sum_w[blk], sum_b[blk]
                )


_kernel: Callable[..., None] | None = None
if numba is not None:
    from llvmlite import ir as _ir
    from numba.extending import intrinsic

    @intrinsic
    def _bits_to_f32_intrinsic(typingctx: object, x: object) -> tuple[object, Callable[..., _ir.Value]]:
        sig = numba.types.float32(numba.types.int32)

        def codegen(
            context: object, builder: _ir.IRBuilder, signature: object, args: list[_ir.Value]
        ) -> _ir.Value:
            return builder.bitcast(args[0], _ir.FloatType())

        return sig, codegen

    @intrinsic
    def _f32_to_bits_intrinsic(typingctx: object, x: object) -> tuple[object, Callable[..., _ir.Value]]:
        sig = numba.types.int32(numba.types.float32)

        def codegen(
            context: object, builder: _ir.IRBuilder, signature: object, args: list[_ir.Value]
        ) -> _ir.Value:
            return builder.bitcast(args[0], _ir.IntType(32))

        return sig, codegen

    # inside compiled code the intrinsics stand in for the plain fallbacks (same signatures, one bitcast)
    _bits_to_f32 = cast("Callable[[np.int32], np.float32]", _bits_to_f32_intrinsic)
    _f32_to_bits = cast("Callable[[np.float32], np.int32]", _f32_to_bits_intrinsic)
    # never fastmath: reassociation and contraction into fused multiply-add would make the bits depend on the
    # CPU target LLVM compiles for (docs/ondevice.md §3a)
    _jit = numba.njit(cache=True)
    _mix = _jit(_mix)
    _order = _jit(_order)
    _exp1 = _jit(_exp1)
    _log1 = _jit(_log1)
    _forward = _jit(_forward)
    _to_groups = _jit(_to_groups)
    _backward = _jit(_backward)
    update_norm_sq = numba.njit(cache=True)(update_norm_sq)  # the server's float64 expressions
    _check_add = numba.njit(cache=True)(_check_add)
    _kernel = numba.njit(cache=True, parallel=True)(_train_kernel)


def fastmath_kernel() -> Callable[..., None]:
    """The same kernel compiled with ``fastmath`` (reassociation, contraction): not the spec's bits, for
    ``benchmarks/fleet_throughput.py`` to print what exactness costs. Compiled on first use."""
    global _kernel_fastmath
    if _kernel_fastmath is None:
        _kernel_fastmath = numba.njit(cache=True, parallel=True, fastmath=FASTMATH)(_train_kernel)
    return _kernel_fastmath


_kernel_fastmath: Callable[..., None] | None = None


def worker_threads() -> int:
    """numba threads to use: all of them, or ``OMP_NUM_THREADS`` when that is set lower."""
    n = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        omp = 0
    return max(1, min(n, omp)) if omp > 0 else n


def _keys(seed: int, round_: int, device_ids: np.ndarray, epochs: int) -> np.ndarray:
    """Shuffle keys [K, epochs] (docs/ondevice.md §3)."""
    ids = np.asarray(device_ids)
    return np.ascontiguousarray(np.stack([stream_key(seed, round_, ids, e) for e in range(epochs)], axis=1))


#: the summing arguments of :func:`_train_kernel`: example weights, start head (float64 w, b), max norm, clip
#: norm, per-block sums (w, b), verdicts
_Sums = tuple[np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray, np.ndarray, np.ndarray]


def _no_sums(n_cls: int, dim: int) -> _Sums:
    """The summing arguments of :func:`_train_kernel` when it writes every head instead."""
    z64 = np.zeros(0, dtype=np.float64)
    return (
        z64,
        np.zeros((n_cls, dim)),
        np.zeros(n_cls),
        0.0,
        0.0,
        np.zeros((0, n_cls, dim)),
        np.zeros((0, n_cls)),
        np.zeros(0, dtype=np.int8),
    )


_NO_LABELS = np.zeros((0, 0), dtype=np.int64)
_NO_WEIGHTS = np.zeros((0, 0), dtype=np.float32)


def _slot_labels(slot_labels: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """``slot_labels`` as contiguous int64 [K, N] shaped as ``idx`` (None stays None)."""
    if slot_labels is None:
        return None
    lab = np.asarray(slot_labels)
    if lab.shape != idx.shape or not np.issubdtype(lab.dtype, np.integer):
        raise ModelError(
            f"slot_labels must be integers [{idx.shape[0]}, {idx.shape[1]}], got {lab.dtype} {lab.shape}"
        )
    return np.ascontiguousarray(lab, dtype=np.int64)


def _run(
    w_init: np.ndarray,
    b_init: np.ndarray,
    pool: np.ndarray,
    plabels: np.ndarray,
    idx: np.ndarray,
    counts: np.ndarray,
    cfg: TrainConfig,
    input_scale: float,
    input_zero_point: int,
    keys: np.ndarray,
    sums: _Sums | None = None,
    fastmath: bool = False,
    slot_labels: np.ndarray | None = None,
    slot_weights: np.ndarray | None = None,
) -> TrainResult:
    """Call the kernel with numba's threads capped (see the module docstring); raise on bad rows or labels.
    Without ``sums`` it writes every head; with them (the summing arguments of :func:`_train_kernel`) it adds
    them up instead and the result's heads are empty. ``slot_labels`` (int64 [K, N]) replace the pool's labels,
    ``slot_weights`` (float32 [K, N]) weight each slot's gradient; None: empty arrays (always the same dtypes, so
    one compiled kernel serves every call)."""
    assert _kernel is not None
    k, (_, n_cls, dim) = idx.shape[0], w_init.shape
    out = 0 if sums is not None else k
    w = np.empty((out, n_cls, dim), dtype=np.float32)
    b = np.empty((out, n_cls), dtype=np.float32)
    loss = np.zeros(k, dtype=np.float64)
    steps = np.zeros(k, dtype=np.int64)
    f32 = np.float32
    prev = numba.get_num_threads()
    numba.set_num_threads(worker_threads())
    chunk = numba.set_parallel_chunksize(4)  # blocks of devices handed out dynamically: robust to a busy core
    # LLVM's SLP vectorizer packs the forward pass's sixteen independent sums into SIMD registers (3x faster);
    # numba leaves it off by default (numba #8705, a miscompilation it hit elsewhere), so it is on only while
    # this kernel compiles. It never reorders a sum (no fastmath), and tests/test_ondevice_fast.py checks the
    # compiled kernel against the numpy spec bit for bit.
    slp = getattr(numba.config, "SLP_VECTORIZE", 0)
    setattr(numba.config, "SLP_VECTORIZE", 1)  # noqa: B010  (numba's config module has no stubs)
    try:
        (fastmath_kernel() if fastmath else _kernel)(
            w_init,
            b_init,
            pool,
            plabels,
            idx,
            _NO_LABELS if slot_labels is None else slot_labels,
            _NO_WEIGHTS if slot_weights is None else slot_weights,
            counts,
            keys,
            int(cfg.batch_size),
            f32(cfg.lr),
            f32(cfg.momentum),
            f32(cfg.weight_decay),
            f32(cfg.prox_mu),
            f32(input_scale),
            f32(input_zero_point),
            w,
            b,
            loss,
            steps,
            *(sums if sums is not None else _no_sums(n_cls, dim)),
        )
    finally:
        setattr(numba.config, "SLP_VECTORIZE", slp)  # noqa: B010
        numba.set_parallel_chunksize(chunk)
        numba.set_num_threads(prev)
    if (steps < 0).any():
        raise ModelError(
            f"labels of the visited cache slots must be class indices 0..{n_cls - 1} "
            f"(and pool rows within 0..{pool.shape[0] - 1})"
        )
    return TrainResult(w, b, loss.astype(np.float32), steps)


def _pooled_head(
    weights: np.ndarray, bias: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The start head as contiguous float32, after checking the pooled call's shapes."""
    w0 = np.ascontiguousarray(weights, dtype=np.float32)
    b0 = np.ascontiguousarray(bias, dtype=np.float32)
    if w0.ndim != 2 or b0.shape != w0.shape[:1]:
        raise ModelError(f"weights [C, D] and bias [C], got {w0.shape} and {b0.shape}")
    if pool.ndim != 2 or pool.dtype != np.int8 or pool.shape[1] != w0.shape[1]:
        raise ModelError(f"pool must be int8 [M, {w0.shape[1]}], got {pool.dtype} {pool.shape}")
    if idx.ndim != 2 or pool_labels.shape != pool.shape[:1]:
        raise ModelError(
            f"idx must be [K, N] and pool_labels [{pool.shape[0]}], got {idx.shape}, {pool_labels.shape}"
        )
    return w0, b0


def train_pooled(
    weights: np.ndarray,
    bias: np.ndarray,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    idx: np.ndarray,
    counts: np.ndarray,
    job: TrainJob,
    *,
    slot_labels: np.ndarray | None = None,
) -> TrainResult:
    """Train K devices whose caches are rows of a shared feature pool, from one head.

    ``weights`` [C, D] and ``bias`` [C]: the head every device starts from; ``pool`` int8 [M, D] (a
    memory-mapped pool is read in place), ``pool_labels`` [M] (any integer type), ``idx`` [K, N] pool rows of
    each device's cache slots (int32 is enough), ``counts`` [K]; ``slot_labels`` int [K, N]: each slot's own
    label, used instead of ``pool_labels[idx]`` (devices whose labels differ: noisy, pseudo-labels);
    ``job.sample_weights`` [K, N]: each slot's gradient weight. Same result as :func:`train_heads_fast` on
    ``pool[idx]`` and ``pool_labels[idx]`` (or ``slot_labels``), without gathering them: no [K, N, D] copy, no
    dtype conversion of the pool.
    """
    w0, b0 = _pooled_head(weights, bias, pool, pool_labels, idx)
    cnt = np.minimum(np.asarray(counts, dtype=np.int64), idx.shape[1])
    slab = _slot_labels(slot_labels, idx)
    sw = job.slot_weights(*idx.shape)
    if _kernel is None:  # pragma: no cover
        feats = np.asarray(pool)[idx]
        labels = slab if slab is not None else np.asarray(pool_labels, dtype=np.int64)[idx]
        return train_heads(
            w0,
            b0,
            feats,
            labels,
            cnt,
            job,
        )
    return _run(
        w0[None],
        b0[None],
        np.asarray(pool),
        np.ascontiguousarray(pool_labels),
        np.ascontiguousarray(idx),
        cnt,
        job.cfg,
        job.input_scale,
        job.input_zero_point,
        _keys(job.seed, job.round_, job.device_ids, job.cfg.epochs),
        slot_labels=slab,
        slot_weights=sw,
    )


@dataclass
class PooledSums:
    """What :func:`train_pooled_sums` returns: the accepted devices' weighted update sums and, per device, the
    verdict and loss."""

    sum_w: np.ndarray  # float64 [C, D]: sum over accepted devices of weight_i * s_i * (w_i - g)
    sum_b: np.ndarray  # float64 [C]
    verdict: np.ndarray  # int8 [K]: ACCEPTED, NON_FINITE or NORM_TOO_LARGE
    loss: np.ndarray  # float32 [K], as TrainResult.loss


def train_pooled_sums(
    weights: np.ndarray,
    bias: np.ndarray,
    pool: np.ndarray,
    pool_labels: np.ndarray,
    idx: np.ndarray,
    counts: np.ndarray,
    job: TrainJob,
    *,
    example_weights: np.ndarray,
    max_norm: float,
    clip_norm: float,
    slot_labels: np.ndarray | None = None,
) -> PooledSums:
    """:func:`train_pooled`, then each device's head checked as the server checks it (finite, norm of its
    difference from the start head at most ``max_norm``), clipped (``clip_norm`` > 0) and added, times
    ``example_weights[i]``, into float64 sums, inside the kernel: no per-device head is written (at 65,536
    devices of 64 x 10 that is 168 MB less to allocate, fault in and read back). The trained heads are the same
    bits as :func:`train_pooled`'s; the sums add the devices in blocks of 32, blocks in order, so they do not
    depend on the thread count. ``slot_labels`` and ``job.sample_weights`` as in :func:`train_pooled`. Needs
    numba (:data:`HAVE_NUMBA`)."""
    if _kernel is None:  # pragma: no cover
        raise RuntimeError("train_pooled_sums needs numba")
    w0, b0 = _pooled_head(weights, bias, pool, pool_labels, idx)
    k, (n_cls, dim) = idx.shape[0], w0.shape
    blocks = max(1, -(-k // _BLOCK))
    sum_w = np.zeros((blocks, n_cls, dim), dtype=np.float64)
    sum_b = np.zeros((blocks, n_cls), dtype=np.float64)
    verdict = np.zeros(k, dtype=np.int8)
    res = _run(
        w0[None],
        b0[None],
        np.asarray(pool),
        np.ascontiguousarray(pool_labels),
        np.ascontiguousarray(idx),
        np.minimum(np.asarray(counts, dtype=np.int64), idx.shape[1]),
        job.cfg,
        job.input_scale,
        job.input_zero_point,
        _keys(job.seed, job.round_, job.device_ids, job.cfg.epochs),
        (
            np.ascontiguousarray(example_weights, dtype=np.float64),
            w0.astype(np.float64),
            b0.astype(np.float64),
            float(max_norm),
            float(clip_norm),
            sum_w,
            sum_b,
            verdict,
        ),
        slot_labels=_slot_labels(slot_labels, idx),
        slot_weights=job.slot_weights(*idx.shape),
    )
    return PooledSums(sum_w.sum(axis=0), sum_b.sum(axis=0), verdict, res.loss)


def train_heads_fast(
    weights: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    job: TrainJob,
    *,
    fastmath: bool = False,
) -> TrainResult:
    """:func:`fedtiny.ondevice.train.train_heads` compiled: same arguments and results within the stated tolerance.

    ``features`` int8 [K, N, D] (cache slots), ``labels`` [K, N], ``counts`` [K] (clipped to N); ``weights``
    [C, D] (one head for all) or [K, C, D]; ``job.sample_weights`` [K, N] (optional) weights each slot's
    gradient. Falls back to the numpy spec when numba is not importable.
    ``fastmath=True`` runs the kernel compiled with reassociation and contraction instead: not the spec's bits,
    only for ``benchmarks/fleet_throughput.py`` to show what exactness costs.
    """
    if _kernel is None:  # pragma: no cover
        return train_heads(
            weights,
            bias,
            features,
            labels,
            counts,
            job,
        )
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32)
    if w.ndim == 2:
        w, b = w[None], b[None]
    if w.ndim != 3 or b.shape != w.shape[:2] or w.shape[0] not in (1, k):
        raise ModelError(
            f"weights [K, C, D] and bias [K, C] for K = {k} devices, got {w.shape} and {b.shape}"
        )
    d = w.shape[2]
    if features.ndim != 3 or features.shape[0] != k or features.shape[2] != d or features.dtype != np.int8:
        raise ModelError(f"features must be int8 [{k}, N, {d}], got {features.dtype} {features.shape}")
    lab = np.ascontiguousarray(labels)
    if lab.shape != features.shape[:2]:
        raise ModelError(f"labels must be [{k}, {features.shape[1]}], got {lab.shape}")
    n_cap = features.shape[1]
    rows = k * n_cap
    idx = np.arange(rows, dtype=np.int32 if rows < 2**31 else np.int64).reshape(k, n_cap)
    return _run(
        w,
        b,
        np.ascontiguousarray(features).reshape(rows, d),
        lab.reshape(rows),
        idx,
        np.minimum(counts, n_cap),
        job.cfg,
        job.input_scale,
        job.input_zero_point,
        _keys(job.seed, job.round_, job.device_ids, job.cfg.epochs),
        fastmath=fastmath,
        slot_weights=job.slot_weights(k, n_cap),
    )
