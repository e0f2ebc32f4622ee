"""A compiled per-device head trainer: :func:`fedtiny.ondevice.train.train_heads`, fast.

Same arguments, sample order (the counter-based hash of docs/ondevice.md §3), batching, momentum, weight
decay, FedProx, per-device ``counts`` and loss as the numpy spec, which stays the readable reference. The
difference: each device is one loop over its own tiny matrices (numba, float32, devices spread over the cores),
and float sums may be reordered (``fastmath`` reassociation and fused multiply-add), so the results agree
with the spec within the tolerance docs/ondevice.md states ("The fast kernel"), not bit for bit. Every
device is computed alone in a fixed order, so the bits do not depend on the number of threads.

Threads: numba's thread pool, capped at ``OMP_NUM_THREADS`` when that is set (Ray sets it to a worker's
``num_cpus``), so two Ray workers on two cores do not each run two threads.

Compilation is cached on disk (``cache=True``, in ``__pycache__`` or ``NUMBA_CACHE_DIR``): the first call in
a fresh checkout compiles for a few seconds, later processes load the cached machine code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.shuffle import stream_key
from fedtiny.ondevice.train import TrainConfig, TrainResult, train_heads

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


def _mix(z: Any) -> Any:
    """splitmix64 finalizer on one uint64 (wrapping), as :func:`fedtiny.ondevice.shuffle.mix64`."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


_RANK_SORT_MAX = 256  # up to this many samples the O(n^2) rank sort beats a merge sort


def _order(key: Any, n: int, order: np.ndarray, sk: np.ndarray) -> None:
    """``order[:n]`` = slots 0..n-1 sorted by ``mix(key ^ (slot + 1) * GOLDEN)``, stable (as the spec's argsort).

    Small caches by rank: slot s goes to the number of slots with a smaller key plus those before it with an
    equal key (branch-free compares that vectorize); larger ones with numpy's stable merge sort.
    """
    for s in range(n):
        sk[s] = _mix(key ^ ((np.uint64(s) + np.uint64(1)) * _GOLDEN))
    if n > _RANK_SORT_MAX:
        order[:n] = np.argsort(sk[:n], kind="mergesort")
        return
    for s in range(n):
        ks = sk[s]
        r = 0
        for t in range(s):
            r += sk[t] <= ks
        for t in range(s + 1, n):
            r += sk[t] < ks
        order[r] = s


def _train_kernel(
    w: np.ndarray,
    b: np.ndarray,
    feats: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    keys: np.ndarray,
    bsz: int,
    lr: Any,
    mom: Any,
    wd: Any,
    mu: Any,
    scale: Any,
    zp: Any,
    loss_out: np.ndarray,
    steps_out: np.ndarray,
) -> None:
    """SGD of docs/ondevice.md §3 on every device, in place on ``w`` [K, C, D] and ``b`` [K, C] (float32).

    Per device: dequantize its cache once, then per step the forward pass (one dot product per sample and
    class), softmax, the batch gradient and the update. Indices are plain loop variables over row views, so
    numba's negative-index checks vanish and LLVM vectorizes the inner loops over D.
    """
    k, n_cls, dim = w.shape
    cap = feats.shape[1]
    epochs = keys.shape[1]
    one = np.float32(1.0)
    n_blocks = (k + _BLOCK - 1) // _BLOCK
    for blk in numba.prange(n_blocks):
        xs = np.empty((cap, dim), dtype=np.float32)  # the device's dequantized cache
        order = np.empty(cap, dtype=np.int64)
        sk = np.empty(cap, dtype=np.uint64)
        g = np.empty((bsz, n_cls), dtype=np.float32)  # logits, then probabilities, then the loss gradient
        gw = np.empty((n_cls, dim), dtype=np.float32)
        gb = np.empty(n_cls, dtype=np.float32)
        w0 = np.empty((n_cls, dim), dtype=np.float32)
        b0 = np.empty(n_cls, dtype=np.float32)
        vw = np.empty((n_cls, dim), dtype=np.float32)
        vb = np.empty(n_cls, dtype=np.float32)
        for i in range(blk * _BLOCK, min(k, (blk + 1) * _BLOCK)):
            n = min(max(counts[i], 0), cap)
            wi = w[i]
            bi = b[i]
            fi = feats[i]
            for s in range(n):
                row = fi[s]
                xr = xs[s]
                for d in range(dim):
                    xr[d] = (np.float32(row[d]) - zp) * scale
            if mu > 0:
                w0[:] = wi
                b0[:] = bi
            if mom > 0:
                vw[:] = 0
                vb[:] = 0
            loss_sum = 0.0
            steps = 0
            for e in range(epochs):
                _order(keys[i, e], n, order, sk)
                for t0 in range(0, n, bsz):
                    m = min(bsz, n - t0)
                    inv_m = one / np.float32(m)
                    for j in range(m):
                        x = xs[order[t0 + j]]
                        y = labels[i, order[t0 + j]]
                        gj = g[j]
                        for c in range(n_cls):
                            wc = wi[c]
                            acc = np.float32(0.0)
                            for d in range(dim):
                                acc += wc[d] * x[d]
                            gj[c] = acc + bi[c]
                        zmax = gj[0]
                        for c in range(1, n_cls):
                            zmax = max(zmax, gj[c])
                        zy = gj[y] - zmax
                        tot = np.float32(0.0)
                        for c in range(n_cls):
                            ez = np.exp(gj[c] - zmax)
                            gj[c] = ez
                            tot += ez
                        loss_sum += np.log(tot) - zy
                        for c in range(n_cls):
                            gj[c] = gj[c] / tot
                        gj[y] -= one
                        for c in range(n_cls):
                            gj[c] *= inv_m
                    gw[:] = 0
                    gb[:] = 0
                    for j in range(m):
                        x = xs[order[t0 + j]]
                        gj = g[j]
                        for c in range(n_cls):
                            gjc = gj[c]
                            gb[c] += gjc
                            gwc = gw[c]
                            for d in range(dim):
                                gwc[d] += gjc * x[d]
                    if wd > 0:
                        for c in range(n_cls):
                            gwc, wc = gw[c], wi[c]
                            for d in range(dim):
                                gwc[d] += wd * wc[d]
                    if mu > 0:
                        for c in range(n_cls):
                            gwc, wc, w0c = gw[c], wi[c], w0[c]
                            for d in range(dim):
                                gwc[d] += mu * (wc[d] - w0c[d])
                            gb[c] += mu * (bi[c] - b0[c])
                    if mom > 0:
                        for c in range(n_cls):
                            gwc, vwc = gw[c], vw[c]
                            for d in range(dim):
                                vwc[d] = mom * vwc[d] + gwc[d]
                                gwc[d] = vwc[d]
                            vb[c] = mom * vb[c] + gb[c]
                            gb[c] = vb[c]
                    for c in range(n_cls):
                        gwc, wc = gw[c], wi[c]
                        for d in range(dim):
                            wc[d] -= lr * gwc[d]
                        bi[c] -= lr * gb[c]
                    steps += 1
            loss_out[i] = loss_sum / max(n * epochs, 1)
            steps_out[i] = steps


_kernel: Callable[..., None] | None = None
if numba is not None:
    _jit = numba.njit(cache=True, fastmath=FASTMATH)
    _mix = _jit(_mix)
    _order = _jit(_order)
    _kernel = numba.njit(cache=True, parallel=True, fastmath=FASTMATH)(_train_kernel)


def _threads() -> int:
    """numba threads to use: all of them, or ``OMP_NUM_THREADS`` when that is set lower."""
    n = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        omp = 0
    return max(1, min(n, omp)) if omp > 0 else n


def train_heads_fast(
    weights: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    cfg: TrainConfig,
    *,
    input_scale: float,
    input_zero_point: int,
    seed: int,
    round_: int,
    device_ids: np.ndarray,
) -> TrainResult:
    """:func:`fedtiny.ondevice.train.train_heads` compiled: same arguments and results within the stated tolerance.

    ``features`` int8 [K, N, D] (cache slots), ``labels`` [K, N], ``counts`` [K] (clipped to N). Falls back
    to the numpy spec when numba is not importable.
    """
    if _kernel is None:  # pragma: no cover
        return train_heads(
            weights,
            bias,
            features,
            labels,
            counts,
            cfg,
            input_scale=input_scale,
            input_zero_point=input_zero_point,
            seed=seed,
            round_=round_,
            device_ids=device_ids,
        )
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    w = np.array(weights, dtype=np.float32, copy=True)
    b = np.array(bias, dtype=np.float32, copy=True)
    if w.ndim == 2:
        w, b = np.broadcast_to(w, (k, *w.shape)).copy(), np.broadcast_to(b, (k, b.shape[-1])).copy()
    if w.ndim != 3 or b.shape != w.shape[:2] or w.shape[0] != k:
        raise ModelError(
            f"weights [K, C, D] and bias [K, C] for K = {k} devices, got {w.shape} and {b.shape}"
        )
    d = w.shape[2]
    if features.ndim != 3 or features.shape[0] != k or features.shape[2] != d or features.dtype != np.int8:
        raise ModelError(f"features must be int8 [{k}, N, {d}], got {features.dtype} {features.shape}")
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    if lab.shape != features.shape[:2]:
        raise ModelError(f"labels must be [{k}, {features.shape[1]}], got {lab.shape}")
    n_cap = features.shape[1]
    counts = np.minimum(counts, n_cap)
    used = np.arange(n_cap)[None, :] < counts[:, None]  # only visited slots must hold a class index
    if ((lab < 0) | (lab >= w.shape[1]))[used].any():
        raise ModelError(f"labels of the visited cache slots must be class indices 0..{w.shape[1] - 1}")
    ids = np.asarray(device_ids)
    keys = np.stack([stream_key(seed, round_, ids, e) for e in range(cfg.epochs)], axis=1).reshape(
        k, cfg.epochs
    )
    loss = np.zeros(k, dtype=np.float64)
    steps = np.zeros(k, dtype=np.int64)
    f32 = np.float32
    prev = numba.get_num_threads()
    numba.set_num_threads(_threads())
    chunk = numba.set_parallel_chunksize(4)  # blocks of devices handed out dynamically: robust to a busy core
    try:
        _kernel(
            w,
            b,
            np.ascontiguousarray(features),
            lab,
            counts,
            np.ascontiguousarray(keys),
            int(cfg.batch_size),
            f32(cfg.lr),
            f32(cfg.momentum),
            f32(cfg.weight_decay),
            f32(cfg.prox_mu),
            f32(input_scale),
            f32(input_zero_point),
            loss,
            steps,
        )
    finally:
        numba.set_parallel_chunksize(chunk)
        numba.set_num_threads(prev)
    return TrainResult(w, b, loss.astype(np.float32), steps)
