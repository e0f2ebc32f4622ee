"""Gateway-side partial sums: for a strategy that only reads the example-weighted mean update (FedAvg, FedAvgM,
FedProx, FedAdam, FedYogi, FedAdagrad as Flower implements them), a simulated gateway validates its devices'
updates itself and sends one sum instead of one head per device.

Why: at 100,000 devices a round's heads are 256 MB of float32 that travel through Flower's messages and Ray,
are concatenated in device order and validated on the server; at a million, 2.6 GB per copy. The sums are
what :class:`fedtiny.server.strategy.DeviceStrategy` computes from those heads anyway, so the strategy sees the
same mean update (up to float64 summation order: per gateway, then over gateways, instead of over fixed
chunks of the fleet; about 1e-16 relative, far below float32's rounding of the head).

The same checks as the server's (:func:`fedtiny.server.aggregate.validate_updates`: shape, NaN/Inf, norm; then
fedtiny's clipping, ``strategy.clip_norm``), on the same decoded values (an int8 uplink is encoded and decoded
as the server would). Strategies that need every device (Krum, Bulyan, FedMedian, differential privacy, a
user's strategy) and personalization keep the per-device replies: the server asks for sums only when they
give the same result (config ``reduce``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedtiny.ondevice import FloatHead
from fedtiny.ondevice.fast import ACCEPTED, NON_FINITE, NORM_TOO_LARGE
from fedtiny.records import decode_int8_delta, encode_int8_delta
from fedtiny.server.aggregate import update_stats, validate_updates, weighted_delta
from fedtiny.server.exact import dot

#: keys of a gateway's partial sums (all numpy arrays, so that they travel as a Flower ArrayRecord)
SUM_W, SUM_B, SUM_N, SUM_LOSS, SUM_NLOSS, ACCEPTED_IDS = (
    "psum_w",
    "psum_b",
    "psum_n",
    "psum_loss",
    "psum_nloss",
    "accepted_ids",
)
REJECTED = "rejected_"  # + reason: the count of updates rejected for it


def is_partial(part: dict[str, np.ndarray]) -> bool:
    return SUM_W in part


def reduce_updates(
    w: np.ndarray,
    b: np.ndarray,
    n: np.ndarray,
    loss: np.ndarray,
    device_ids: np.ndarray,
    g: FloatHead,
    max_norm: float,
    clip_norm: float,
    uplink: str = "float32",
) -> dict[str, np.ndarray]:
    """A gateway's partial sums of its devices' trained heads ``w`` [K, C, D], ``b`` [K, C] from ``g``: the
    accepted ones' ``sum n_i * s_i * (w_i - g)`` in float64 (``s_i``: fedtiny's clipping), ``sum n_i``,
    ``sum loss_i``, ``sum n_i * loss_i``, their ids, and the rejections per reason."""
    if uplink == "int8":  # what the server would decode from the int8 uplink
        q, sc = encode_int8_delta(w - g.weights[None])
        w = g.weights[None] + decode_int8_delta(q, sc)
    val = validate_updates(w, b, g.weights, g.bias, max_norm)
    ok = val.accepted
    if not ok.all():
        w, b, n, loss, device_ids = w[ok], b[ok], n[ok], loss[ok], device_ids[ok]
    gw, gb = g.weights.astype(np.float64), g.bias.astype(np.float64)
    scale = np.ones(len(n), dtype=np.float64)
    if clip_norm > 0 and len(n):  # as DeviceStrategy.aggregate: norms of the float64 differences
        _, sq = update_stats(w, b, gw, gb)
        scale = np.minimum(1.0, clip_norm / np.maximum(np.sqrt(sq), 1e-12))
    n64 = n.astype(np.float64)
    if len(n):
        sw, sb = weighted_delta(w, b, gw, gb, n64 * scale)
    else:
        sw, sb = np.zeros_like(gw), np.zeros_like(gb)
    loss64 = loss.astype(np.float64)
    out = {
        SUM_W: sw,
        SUM_B: sb,
        SUM_N: np.array([n64.sum()]),
        SUM_LOSS: np.array([loss64.sum()]),
        SUM_NLOSS: np.array([dot(n64, loss64)]),  # no BLAS: its summation order depends on the CPU
        ACCEPTED_IDS: np.asarray(device_ids, dtype=np.int64),
    }
    for reason, count in val.reasons.items():
        out[REJECTED + reason] = np.array([count], dtype=np.int64)
    return out


def sums_from_verdicts(
    sum_w: np.ndarray,
    sum_b: np.ndarray,
    n: np.ndarray,
    loss: np.ndarray,
    device_ids: np.ndarray,
    verdict: np.ndarray,
) -> dict[str, np.ndarray]:
    """The partial sums of :func:`reduce_updates` from :func:`fedtiny.ondevice.fast.train_pooled_sums`, which
    checked, clipped and summed the heads inside its kernel: ``sum_w``, ``sum_b`` already hold the accepted
    devices' ``sum n_i * s_i * (w_i - g)``; the counts and losses are added here as there."""
    ok = verdict == ACCEPTED
    n64 = np.asarray(n)[ok].astype(np.float64)
    loss64 = np.asarray(loss)[ok].astype(np.float64)
    return {
        SUM_W: np.asarray(sum_w, dtype=np.float64),
        SUM_B: np.asarray(sum_b, dtype=np.float64),
        SUM_N: np.array([n64.sum()]),
        SUM_LOSS: np.array([loss64.sum()]),
        SUM_NLOSS: np.array([dot(n64, loss64)]),  # no BLAS: its summation order depends on the CPU
        ACCEPTED_IDS: np.asarray(device_ids, dtype=np.int64)[ok],
        REJECTED + "non_finite": np.array([int((verdict == NON_FINITE).sum())], dtype=np.int64),
        REJECTED + "norm_too_large": np.array([int((verdict == NORM_TOO_LARGE).sum())], dtype=np.int64),
    }


def empty_sums(g: FloatHead) -> dict[str, np.ndarray]:
    """The partial sums of no devices (a gateway sent none)."""
    return reduce_updates(
        np.zeros((0, *g.weights.shape), dtype=np.float32),
        np.zeros((0, *g.bias.shape), dtype=np.float32),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.float32),
        np.zeros(0, dtype=np.int64),
        g,
        float("inf"),
        0.0,
    )


def merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One gateway's partial sums from those of consecutive chunks of its devices (in the order given: a
    gateway trains its devices in bounded chunks so that its memory does not grow with the fleet)."""
    if len(parts) == 1:
        return dict(parts[0])
    out = {
        SUM_W: np.add.reduce([p[SUM_W] for p in parts], axis=0),  # chunks in order (a sequential loop)
        SUM_B: np.add.reduce([p[SUM_B] for p in parts], axis=0),
        ACCEPTED_IDS: np.concatenate([p[ACCEPTED_IDS] for p in parts]),
    }
    for key in (SUM_N, SUM_LOSS, SUM_NLOSS):
        out[key] = np.array([sum(float(p[key][0]) for p in parts)])
    for key in sorted({k for p in parts for k in p if k.startswith(REJECTED)}):
        out[key] = np.array([sum(int(p[key][0]) for p in parts if key in p)], dtype=np.int64)
    tallies = [p[LABEL_COUNTS] for p in parts if LABEL_COUNTS in p]
    if tallies:
        out[LABEL_COUNTS] = np.sum(tallies, axis=0, dtype=np.int64)
    for key in (LABEL_DEVICES, LABEL_PER_DEVICE):
        if any(key in p for p in parts):
            out[key] = np.concatenate([p[key] for p in parts if key in p])
    return out


#: a gateway reply's label tally (int64, fedtiny.fleet.labels.COUNT_NAMES), when the fleet's labels are partial
LABEL_COUNTS = "label_counts"


#: a gateway reply's devices (int64 [K]) and what each trained on (int32 [K, 2]: given labels, pseudo-labels)
LABEL_DEVICES, LABEL_PER_DEVICE = "label_devices", "label_per_device"


def label_tally(parts: Sequence[dict[str, np.ndarray]]) -> np.ndarray | None:
    """The label tallies of every gateway reply added up; None when no reply has one (every sample labelled)."""
    tallies = [np.asarray(p[LABEL_COUNTS], dtype=np.int64) for p in parts if LABEL_COUNTS in p]
    return np.sum(tallies, axis=0) if tallies else None


@dataclass
class Combined:
    """The gateways' partial sums added up: the accepted devices' weighted mean update and its bookkeeping."""

    step_w: np.ndarray  # float64 [C, D]: sum n_i s_i (w_i - g) / sum n_i
    step_b: np.ndarray
    total: float  # sum n_i over the accepted devices
    mean_loss_weighted: float  # sum n_i loss_i / sum n_i (what the strategy's metrics aggregate)
    mean_loss: float  # mean of the accepted devices' losses (the round's "loss" column)
    device_ids: np.ndarray  # accepted, ascending
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def combine(parts: Sequence[dict[str, np.ndarray]], g: FloatHead) -> Combined:
    """Add the gateways' partial sums (in order of their first device, so that the float64 sum does not depend
    on the order of their replies)."""
    parts = sorted(parts, key=lambda p: int(p[ACCEPTED_IDS][0]) if len(p[ACCEPTED_IDS]) else 2**62)
    sw = np.zeros(g.weights.shape, dtype=np.float64)
    sb = np.zeros(g.bias.shape, dtype=np.float64)
    total = loss_sum = nloss = 0.0
    reasons: dict[str, int] = {}
    for p in parts:
        if p[SUM_W].shape != sw.shape or p[SUM_B].shape != sb.shape:
            raise ValueError(
                f"a gateway's partial sums have shape {p[SUM_W].shape}, {p[SUM_B].shape}; "
                f"expected {sw.shape}, {sb.shape}"
            )
        sw += p[SUM_W]
        sb += p[SUM_B]
        total += float(p[SUM_N][0])
        loss_sum += float(p[SUM_LOSS][0])
        nloss += float(p[SUM_NLOSS][0])
        for key, arr in p.items():
            if key.startswith(REJECTED):
                reason = key[len(REJECTED) :]
                reasons[reason] = reasons.get(reason, 0) + int(arr[0])
    ids = np.concatenate([p[ACCEPTED_IDS] for p in parts]) if parts else np.zeros(0, np.int64)
    ids = np.sort(ids, kind="stable")
    k = len(ids)
    return Combined(
        sw / total if total > 0 else sw,
        sb / total if total > 0 else sb,
        total,
        nloss / total if total > 0 else float("nan"),
        loss_sum / k if k else float("nan"),
        ids,
        sum(reasons.values()),
        reasons,
    )


def labels_per_device(parts: Sequence[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Device ids and their (given labels, pseudo-labels) trained on, from every reply; None: none has them."""
    have = [p for p in parts if LABEL_DEVICES in p]
    if not have:
        return None
    return (
        np.concatenate([p[LABEL_DEVICES] for p in have]).astype(np.int64),
        np.concatenate([p[LABEL_PER_DEVICE] for p in have]).astype(np.int32).reshape(-1, 2),
    )
