"""Fixed-point head training for boards without an FPU (Cortex-M0+): integer SGD, same visit order.

Integer formats (docs/ondevice.md §3b): weights are kept as ``V = W * s_in * 2^24`` (int32, the feature
scale folded in), biases as ``b * 2^24`` (int32), logits and probabilities in Q16, gradients in Q16 divided
by the batch size. Every step is integer arithmetic with 64-bit intermediates, so the C firmware reproduces
it bit for bit; only the conversions at the start and end of training use IEEE double.
"""

from __future__ import annotations

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.fmath import log_f32
from fedtiny.ondevice.pseudo import fixed_weight
from fedtiny.ondevice.quant import INT32_MAX, INT32_MIN, quantize_multiplier, round_half_away
from fedtiny.ondevice.train import TrainJob, TrainResult, batches

W_FRAC = 24  # weights and biases: Q.24
Z_FRAC = 16  # logits, probabilities, gradients: Q16
LOG2E_Q16 = 94548  # round(log2(e) * 2^16)
EXP2_POLY_Q16 = (45576, 14873, 5071)  # 2^f - 1 ≈ c1 f + c2 f^2 + c3 f^3 on [0, 1), max error 2.5e-4


def rescale(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """``round(x * real)`` for ``real = mult * 2^(shift - 31)``: ``(x*mult + 2^(k-1)) >> k`` with k = 31 - shift.

    ``x`` must satisfy |x| < 2^32 so that the int64 product cannot overflow.
    """
    k = 31 - shift
    prod = np.asarray(x, dtype=np.int64) * np.int64(mult)
    if k <= 0:
        return prod << np.int64(-k)
    return (prod + (np.int64(1) << np.int64(k - 1))) >> np.int64(k)


def exp2_q16(y: np.ndarray) -> np.ndarray:
    """2^(y / 2^16) in Q16 for y <= 0: integer part by shift, fraction by a cubic polynomial (Horner)."""
    n = y >> 16  # floor
    f = y & 0xFFFF
    c1, c2, c3 = EXP2_POLY_Q16
    p = np.full_like(y, c3)
    p = ((p * f) >> 16) + c2
    p = ((p * f) >> 16) + c1
    p = ((p * f) >> 16) + 65536
    sh = np.minimum(-n, 63)
    return np.where(-n >= 31, 0, p >> sh)


def to_fixed(weights: np.ndarray, bias: np.ndarray, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Float head → (V int64 [.., C, D], b int64 [.., C]) in Q.24, via IEEE double."""
    s = float(np.float32(input_scale))
    v = round_half_away(np.asarray(weights, dtype=np.float32).astype(np.float64) * s * 2.0**W_FRAC)
    b = round_half_away(np.asarray(bias, dtype=np.float32).astype(np.float64) * 2.0**W_FRAC)
    return np.clip(v, INT32_MIN, INT32_MAX).astype(np.int64), np.clip(b, INT32_MIN, INT32_MAX).astype(
        np.int64
    )


def from_fixed(v: np.ndarray, b: np.ndarray, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    s = float(np.float32(input_scale))
    w = (v.astype(np.float64) / (s * 2.0**W_FRAC)).astype(np.float32)
    return w, (b.astype(np.float64) / 2.0**W_FRAC).astype(np.float32)


def weights_q16(sample_weights: np.ndarray | None, counts: np.ndarray) -> np.ndarray | None:
    """Each cache slot's gradient weight in Q16 (int64 [K, N]): :func:`fedtiny.ondevice.pseudo.fixed_weight` of
    the float32 weight, 65536 (the weight 1) for slots at or beyond a device's count, which are never visited;
    None stays None. A visited slot's weight must be finite and at least 0."""
    if sample_weights is None:
        return None
    n = sample_weights.shape[1]
    live = np.arange(n)[None, :] < counts[:, None]
    used = sample_weights[live]
    if not (np.isfinite(used) & (used >= 0)).all():
        raise ModelError("sample_weights of the visited cache slots must be finite and >= 0")
    uniq, inv = np.unique(used, return_inverse=True)  # a handful of distinct weights: 1 and pseudo_weight
    wq = np.full(sample_weights.shape, 65536, dtype=np.int64)
    wq[live] = np.array([fixed_weight(float(u)) for u in uniq], dtype=np.int64)[inv.reshape(-1)]
    return wq


def train_heads_fixed(
    weights: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    job: TrainJob,
) -> TrainResult:
    """Integer SGD over K devices; same arguments and sample order as :func:`train_heads` (plain SGD only);
    ``job.sample_weights`` scales each gradient by its Q16 weight (docs/ondevice.md §3b)."""
    cfg, input_scale = job.cfg, job.input_scale
    if cfg.momentum or cfg.weight_decay or cfg.prox_mu:
        raise ModelError("fixed-point training supports plain SGD only (momentum, weight_decay, prox_mu = 0)")
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    k = len(counts)
    if w.ndim == 2:
        w, b = np.broadcast_to(w, (k, *w.shape)), np.broadcast_to(b, (k, b.shape[-1]))
    v, bq = to_fixed(w, b, input_scale)
    n_cap = features.shape[1]
    counts = np.minimum(np.asarray(counts, dtype=np.int64), n_cap)
    s = float(np.float32(input_scale))
    mw, shw = quantize_multiplier(cfg.lr * s * s * 2.0 ** (W_FRAC - Z_FRAC))
    mb, shb = quantize_multiplier(cfg.lr * 2.0 ** (W_FRAC - Z_FRAC))
    rows = np.arange(k)[:, None]
    wq = weights_q16(job.slot_weights(k, n_cap), counts)
    bsz = cfg.batch_size
    loss_sum = np.zeros(k)
    steps = np.zeros(k, dtype=np.int64)
    for st in batches(counts, n_cap, cfg, job.seed, job.round_, job.device_ids):
        idx, valid, active, m = st.idx, st.valid, st.active, st.size
        xi = features[rows, idx].astype(np.int64) - job.input_zero_point  # [K, B, D]
        y = labels[rows, idx].astype(np.int64)
        z = (np.matmul(xi, v.transpose(0, 2, 1)) + bq[:, None, :]) >> (W_FRAC - Z_FRAC)  # Q16 [K, B, C]
        x = z - z.max(axis=-1, keepdims=True)
        e = exp2_q16((x * LOG2E_Q16) >> 16)
        tot = e.sum(axis=-1, keepdims=True)
        p = (e << 16) // tot
        xy = np.take_along_axis(x, y[..., None], axis=-1)[..., 0]
        # float32 per sample (docs/ondevice.md §3b), added in double in visit order
        lj = log_f32(tot[..., 0].astype(np.float32) / np.float32(65536.0)) - xy.astype(
            np.float32
        ) / np.float32(65536.0)
        for j in range(bsz):
            loss_sum += np.where(valid[:, j], lj[:, j].astype(np.float64), 0.0)
        g = p
        g[rows, np.arange(bsz)[None, :], y] -= 65536
        g = np.sign(g) * (np.abs(g) // m[:, None, None])  # C division: truncate toward zero
        if wq is not None:  # a pseudo-labelled sample's weight in Q16 (a weight of 1, 65536, changes nothing)
            g = (g * wq[rows, idx][..., None]) >> 16
        g = np.where(valid[..., None], g, 0)
        gw = np.matmul(g.transpose(0, 2, 1), xi)  # |gw| < 2^24
        gb = g.sum(axis=1)
        act = active[:, None]
        v = np.where(act[..., None], np.clip(v - rescale(gw, mw, shw), INT32_MIN, INT32_MAX), v)
        bq = np.where(act, np.clip(bq - rescale(gb, mb, shb), INT32_MIN, INT32_MAX), bq)
        steps += active
    wf, bf = from_fixed(v, bq, input_scale)
    seen = np.maximum(counts * cfg.epochs, 1)
    return TrainResult(wf, bf, (loss_sum / seen).astype(np.float32), steps)
