"""Head training as a board does it: mini-batch SGD in float32 on dequantized int8 cached features.

Vectorized over K devices (leading axis). Each device uses its own sample count, shuffle order and
active steps, and every sum runs in the order docs/ondevice.md §3 fixes (explicit loops, never BLAS, whose
order depends on the CPU), with the spec's own exp and log (:mod:`fedtiny.ondevice.fmath`): a device trained
alone, in a batch of many, on any CPU, or on a board gives the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.fmath import exp_f32, log_f32
from fedtiny.ondevice.quant import dequantize
from fedtiny.ondevice.shuffle import sample_order, stream_key


@dataclass(frozen=True)
class TrainConfig:
    """On-device training hyper-parameters (the TRAIN command carries exactly these)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0  # FedProx proximal term towards the head the round started from

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ModelError("epochs and batch_size must be >= 1")
        if not (self.lr > 0 and self.momentum >= 0 and self.weight_decay >= 0 and self.prox_mu >= 0):
            raise ModelError("lr must be > 0; momentum, weight_decay and prox_mu >= 0")


@dataclass(frozen=True, eq=False)
class TrainJob:
    """What every head trainer takes besides the heads and the data (:func:`train_heads`, ``train_heads_fixed``,
    ``train_heads_fast``, ``train_pooled``, ``train_pooled_sums``): the hyper-parameters, the quantization of the
    cached int8 features, what fixes each device's sample order (seed, round, device ids [K]) and, optionally,
    each cache slot's gradient weight (docs/ondevice.md §3, §5a): ``sample_weights`` float32 [K, N], indexed as
    the features / labels / idx the trainer takes (slots at or beyond a device's count are ignored); a
    pseudo-labelled sample's gradient is scaled by its ``pseudo_weight``, a labelled one's weight is 1, which
    gives the same bits as no weight. None: every weight 1. The reported loss is never weighted."""

    cfg: TrainConfig
    input_scale: float
    input_zero_point: int
    seed: int
    round_: int
    device_ids: np.ndarray
    sample_weights: np.ndarray | None = None

    def slot_weights(self, k: int, n: int) -> np.ndarray | None:
        """``sample_weights`` as contiguous float32 [k, n] (None stays None), after checking its shape."""
        if self.sample_weights is None:
            return None
        sw = np.ascontiguousarray(self.sample_weights, dtype=np.float32)
        if sw.shape != (k, n):
            raise ModelError(f"sample_weights must be [{k}, {n}] (one per cache slot), got {sw.shape}")
        return sw


@dataclass
class TrainResult:
    weights: np.ndarray  # float32 [K, C, D]
    bias: np.ndarray  # float32 [K, C]
    loss: np.ndarray  # float32 [K]: mean cross-entropy over every sample visited
    steps: np.ndarray  # int64 [K]: SGD steps taken


@dataclass
class Batch:
    """One SGD step of K devices: which cache slots each device visits."""

    idx: np.ndarray  # int [K, B] cache slots (padding repeats a slot; see ``valid``)
    valid: np.ndarray  # bool [K, B]
    active: np.ndarray  # bool [K]: the device still has a step this epoch
    size: np.ndarray  # int64 [K]: valid samples in the batch, at least 1


def batches(
    counts: np.ndarray, capacity: int, cfg: TrainConfig, seed: int, round_: int, device_ids: np.ndarray
) -> Iterator[Batch]:
    """The step schedule of docs/ondevice.md §3, shared by the float32 and fixed-point trainers."""
    bsz = cfg.batch_size
    for epoch in range(cfg.epochs):
        order = sample_order(stream_key(seed, round_, device_ids, epoch), counts, capacity)
        n_steps = -(-counts // bsz)
        for t in range(int(n_steps.max(initial=0))):
            pos = t * bsz + np.arange(bsz)
            valid = pos[None, :] < counts[:, None]
            yield Batch(
                order[:, np.minimum(pos, capacity - 1)], valid, t < n_steps, np.maximum(valid.sum(axis=1), 1)
            )


def softmax_xent(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and per-sample loss of logits ``z`` [..., C] (float32), exactly as docs/ondevice.md §3:
    ``mx`` = the running maximum (``z[c] > mx`` replaces it, so a NaN never does), ``e = exp_f32(z − mx)``,
    ``s`` = the sum of ``e`` in class order from +0, ``p = e / s``, ``loss = log_f32(s) − (z[y] − mx)``."""
    mx = z[..., 0]
    for c in range(1, z.shape[-1]):
        mx = np.where(z[..., c] > mx, z[..., c], mx)
    e = exp_f32(z - mx[..., None])
    s = np.zeros(z.shape[:-1], dtype=np.float32)
    for c in range(z.shape[-1]):
        s = s + e[..., c]
    p = e / s[..., None]
    zy = np.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    return p, log_f32(s) - (zy - mx)


def train_heads(
    weights: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    job: TrainJob,
) -> TrainResult:
    """Train K heads at once. ``features`` int8 [K, N, D] (cache slots), ``labels`` [K, N], ``counts`` [K];
    ``job.sample_weights`` [K, N] (optional) scales each slot's gradient."""
    w = np.array(weights, dtype=np.float32, copy=True)
    b = np.array(bias, dtype=np.float32, copy=True)
    if w.ndim == 2:
        w, b = (
            np.broadcast_to(w, (len(counts), *w.shape)).copy(),
            np.broadcast_to(b, (len(counts), b.shape[-1])).copy(),
        )
    k, _, d = w.shape
    if features.shape[0] != k or features.shape[2] != d or features.dtype != np.int8:
        raise ModelError(f"features must be int8 [{k}, N, {d}], got {features.dtype} {features.shape}")
    n_cap = features.shape[1]
    counts = np.minimum(np.asarray(counts, dtype=np.int64), n_cap)
    cfg = job.cfg
    w0, b0 = w.copy(), b.copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    bsz = cfg.batch_size
    lr, mom, wd, mu = (np.float32(v) for v in (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.prox_mu))
    loss_sum = np.zeros(k, dtype=np.float64)
    steps = np.zeros(k, dtype=np.int64)
    rows = np.arange(k)[:, None]
    sw = job.slot_weights(k, n_cap)
    for st in batches(counts, n_cap, cfg, job.seed, job.round_, job.device_ids):
        idx, valid, active = st.idx, st.valid, st.active
        x = dequantize(features[rows, idx], job.input_scale, job.input_zero_point)  # [K, B, D]
        y = labels[rows, idx].astype(np.int64)
        # forward: each logit summed over d in order from +0, then the bias (no BLAS: its order is the CPU's)
        acc = np.zeros((k, bsz, w.shape[1]), dtype=np.float32)
        for j in range(d):
            acc = acc + w[:, None, :, j] * x[:, :, None, j]
        logits = acc + b[:, None, :]
        p, loss = softmax_xent(logits, y)
        for j in range(bsz):  # the loss in visit order, in double
            loss_sum += np.where(valid[:, j], loss[:, j].astype(np.float64), 0.0)
        g = p
        g[rows, np.arange(bsz)[None, :], y] -= np.float32(1.0)
        g = g * (np.float32(1.0) / st.size.astype(np.float32))[:, None, None]
        # one float32 multiply per weighted sample (docs/ondevice.md §3); a weight of 1 is skipped: the same bits
        if sw is not None:
            wj = sw[rows, idx]
            g = np.where((wj != np.float32(1.0))[..., None], g * wj[..., None], g)
        gw = np.zeros_like(w)
        gb = np.zeros_like(b)
        for j in range(bsz):  # the batch in order; a padding slot adds nothing (not even a signed zero)
            vj = valid[:, j]
            gw = np.where(vj[:, None, None], gw + g[:, j, :, None] * x[:, j, None, :], gw)
            gb = np.where(vj[:, None], gb + g[:, j, :], gb)
        if wd:
            gw = gw + wd * w
        if mu:
            gw = gw + mu * (w - w0)
            gb = gb + mu * (b - b0)
        if mom:  # an inactive device (out of samples this epoch) keeps its velocity untouched
            vw = np.where(active[:, None, None], mom * vw + gw, vw)
            vb = np.where(active[:, None], mom * vb + gb, vb)
            gw, gb = vw, vb
        w = np.where(active[:, None, None], w - lr * gw, w)
        b = np.where(active[:, None], b - lr * gb, b)
        steps += active
    seen = np.maximum(counts * cfg.epochs, 1)
    return TrainResult(w, b, (loss_sum / seen).astype(np.float32), steps)
