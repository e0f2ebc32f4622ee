"""One aggregation step, the same for a simulation and a field trial: device updates as gateways send them ->
decoded (int8 uplink) -> validated (NaN/Inf, shape, norm: rejected and counted) -> ordered by device id ->
the Flower strategy (fedtiny/server/strategy.py) -> re-quantized to the int8 head that is deployed.

Only how the updates reach the server differs (Flower messages to simulated gateways, or field gateways'
replies after deduplication); this is the one place that turns them into the next head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedtiny.ondevice import FloatHead, Int8Head, dequantize_head, quantize_head
from fedtiny.records import decode_int8_delta
from fedtiny.server.aggregate import in_device_order, validate_updates
from fedtiny.server.partial import Combined, combine, is_partial
from fedtiny.server.strategy import DeviceStrategy

#: the arrays of one gateway reply that aggregation reads (besides ``weights`` or ``delta_q``/``delta_scale``)
PER_DEVICE = ("bias", "device_ids", "num_examples", "loss")


@dataclass
class Accepted:
    """The accepted device updates of a round, ordered by device id: float heads ``weights`` [K, C, D],
    ``bias`` [K, C], and per device its id, number of examples and training loss."""

    weights: np.ndarray
    bias: np.ndarray
    device_ids: np.ndarray
    num_examples: np.ndarray
    loss: np.ndarray


@dataclass
class StepResult:
    head: Int8Head  # the head to deploy: the re-quantized aggregate, or the old one if nothing moved it
    accepted: Accepted | None  # None: no update was accepted, or the gateways sent partial sums
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why updates were rejected: reason -> count
    combined: Combined | None = None  # the gateways' partial sums added up (fedtiny/server/partial.py)

    @property
    def accepted_ids(self) -> np.ndarray:
        """Ids of the devices whose updates were accepted, ascending."""
        if self.combined is not None:
            return self.combined.device_ids
        return np.zeros(0, dtype=np.int64) if self.accepted is None else self.accepted.device_ids

    @property
    def trained(self) -> int:
        return len(self.accepted_ids)

    @property
    def loss(self) -> float:
        """Mean training loss of the accepted updates (NaN: none)."""
        if self.combined is not None:
            return self.combined.mean_loss
        return (
            float("nan") if self.accepted is None else float(np.mean(self.accepted.loss.astype(np.float64)))
        )


def decode_weights(part: dict[str, np.ndarray], g: FloatHead) -> np.ndarray:
    """The float weights [K, C, D] of a gateway reply: sent as float32, or as int8 deltas from ``g`` with a
    scale per row (a wrong shape gives an empty array that validation rejects; a NaN scale a non-finite one)."""
    if "delta_q" not in part:
        return part.get("weights", np.zeros((0,)))
    q, sc = part["delta_q"], part["delta_scale"]
    if q.ndim != 3 or sc.shape != q.shape[:2]:
        return np.full((len(part["device_ids"]), 0, 0), np.nan, np.float32)
    weights: np.ndarray = g.weights[None] + decode_int8_delta(q, sc)
    return weights


def aggregate_step(
    server_round: int,
    head: Int8Head,
    parts: Sequence[dict[str, np.ndarray]],
    strategy: DeviceStrategy,
    max_update_norm: float,
    calib: np.ndarray,
    per_tensor: bool = False,
) -> StepResult:
    """The next int8 head from the gateway replies ``parts`` of round ``server_round`` (each: ``weights`` or
    ``delta_q``/``delta_scale``, and ``PER_DEVICE``; or every one partial sums of :mod:`fedtiny.server.partial`)
    to ``head``; ``calib`` features set its output range."""
    g = dequantize_head(head)
    if parts and any(is_partial(p) for p in parts):
        if not all(is_partial(p) for p in parts):
            raise ValueError("gateway replies mix partial sums and per-device updates")
        comb = combine(parts, g)
        if not len(comb.device_ids):
            return StepResult(head, None, comb.rejected, comb.reasons, comb)
        new = strategy.aggregate_mean(
            server_round, g, comb.step_w, comb.step_b, comb.total, comb.mean_loss_weighted
        )
        if new is not None:
            head = quantize_head(new, head.input_scale, head.input_zero_point, calib, per_tensor=per_tensor)
        return StepResult(head, None, comb.rejected, comb.reasons, comb)
    rejected = 0
    reasons: dict[str, int] = {}
    keep: list[tuple[np.ndarray, ...]] = []
    for p in parts:
        w = decode_weights(p, g)
        val = validate_updates(w, p["bias"], g.weights, g.bias, max_update_norm)
        for key, cnt in val.reasons.items():
            reasons[key] = reasons.get(key, 0) + cnt
        rejected += val.rejected
        ok = val.accepted
        if ok.all():  # the usual case: no masked copy of the heads
            keep.append((w, *(p[k] for k in PER_DEVICE)))
        elif ok.any():
            keep.append((w[ok], *(p[k][ok] for k in PER_DEVICE)))
    if not keep:
        return StepResult(head, None, rejected, reasons)
    # ordered by device id (independent of reply order), with one concatenation and no re-ordering copy when
    # gateways serve ascending device ranges, as fedtiny lays them out (device ids are unique in a round)
    w, b, ids, n, loss = in_device_order(keep)
    acc = Accepted(w, b, ids, n, loss)
    new = strategy.aggregate(
        server_round, g, acc.weights, acc.bias, acc.num_examples, acc.device_ids, acc.loss
    )
    if new is not None:  # None: the strategy kept the head (e.g. Bulyan with too few updates)
        head = quantize_head(new, head.input_scale, head.input_zero_point, calib, per_tensor=per_tensor)
    return StepResult(head, acc, rejected, reasons)
