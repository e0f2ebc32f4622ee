"""The int8 head a board holds, its float view, int8 inference and re-quantization.

The head is the model's last FULLY_CONNECTED layer: ``logits = features @ W.T + b``. On the board it is int8
with per-channel weight scales (zero point 0), an int32 bias (scale ``input_scale * weight_scale[c]``) and
its own logit quantization. See docs/ondevice.md for the exact rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.quant import (
    INT32_MAX,
    INT32_MIN,
    channel_multipliers,
    dequantize,
    multiply_by_quantized_multiplier,
    round_half_away,
)
from fedtiny.ondevice.tail import HeadTail

#: smallest logit range used when re-quantizing, so that a degenerate head still gets a finite scale
MIN_LOGIT_RANGE = 1e-3


@dataclass(frozen=True)
class Int8Head:
    """A quantized FULLY_CONNECTED head, exactly as stored in the .tflite flatbuffer."""

    weights: np.ndarray  # int8 [C, D]
    weight_scales: np.ndarray  # float32 [C]
    bias: np.ndarray  # int32 [C]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.dtype != np.int8:
            raise ModelError(f"head weights must be int8 [C, D], got {w.dtype} {w.shape}")
        c = w.shape[0]
        if np.asarray(self.weight_scales).shape != (c,) or np.asarray(self.bias).shape != (c,):
            raise ModelError(f"head with {c} classes needs {c} weight scales and {c} biases")
        object.__setattr__(self, "weight_scales", np.asarray(self.weight_scales, dtype=np.float32))
        object.__setattr__(self, "bias", np.asarray(self.bias, dtype=np.int32))
        object.__setattr__(self, "input_scale", float(np.float32(self.input_scale)))
        object.__setattr__(self, "output_scale", float(np.float32(self.output_scale)))
        object.__setattr__(self, "input_zero_point", int(self.input_zero_point))
        object.__setattr__(self, "output_zero_point", int(self.output_zero_point))

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes a board stores for this head: int8 weights, float32 scales, int32 biases."""
        return int(self.weights.size + 4 * self.num_classes * 2)

    def equals(self, other: Int8Head) -> bool:
        return (
            np.array_equal(self.weights, other.weights)
            and np.array_equal(self.weight_scales, other.weight_scales)
            and np.array_equal(self.bias, other.bias)
            and (self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
            == (other.input_scale, other.input_zero_point, other.output_scale, other.output_zero_point)
        )

    def with_(self, **changes: object) -> Int8Head:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class FloatHead:
    """A head in float32: ``weights`` [C, D] (or [K, C, D] for K devices), ``bias`` [C] (or [K, C])."""

    weights: np.ndarray
    bias: np.ndarray


def dequantize_head(head: Int8Head) -> FloatHead:
    """The float32 head a board trains from: ``W = w_q * s_w[c]``, ``b = bias_q * (s_in * s_w[c])``."""
    ws = head.weight_scales.astype(np.float32)
    w = head.weights.astype(np.float32) * ws[:, None]
    bias_scale = np.float32(head.input_scale) * ws
    b = head.bias.astype(np.float32) * bias_scale
    return FloatHead(weights=w, bias=b)


def head_accumulators(head: Int8Head, features: np.ndarray) -> np.ndarray:
    """int32 accumulators ``bias + sum((x - zp_in) * w)``, shape [..., C]. Exact integer arithmetic: the sum is
    taken by a float64 matrix product (BLAS; every partial sum is an integer below 2^53, so exact, and many
    times faster than numpy's integer matmul), then wrapped to int32 as the int32 arithmetic would."""
    x = features.astype(np.float64) - float(head.input_zero_point)
    acc = (x @ head.weights.astype(np.float64).T).astype(np.int64) + np.asarray(head.bias, dtype=np.int64)
    return ((acc + 2**31) % 2**32) - 2**31


def head_forward_int8(head: Int8Head, features: np.ndarray) -> np.ndarray:
    """int8 logits of TFLite's FULLY_CONNECTED (per-channel, TFLM reference arithmetic) for int8 features."""
    if features.dtype != np.int8 or features.shape[-1] != head.num_features:
        raise ModelError(
            f"features must be int8 [..., {head.num_features}], got {features.dtype} {features.shape}"
        )
    mult, shift = channel_multipliers(head.input_scale, head.weight_scales, head.output_scale)
    acc = head_accumulators(head, features)
    out: np.ndarray = multiply_by_quantized_multiplier(acc, mult, shift) + head.output_zero_point
    return out.clip(-128, 127).astype(np.int8)


def logit_range_to_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) for a range, the way the TFLite converter calibrates activations.

    The range is widened to include 0; computed in double, scale stored as float32.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < MIN_LOGIT_RANGE:
        hi = lo + MIN_LOGIT_RANGE
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(round_half_away(-128.0 - lo / scale))
    return scale, int(np.clip(zp, -128, 127))


def quantize_weights(
    fh: FloatHead, input_scale: float, per_tensor: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel (or, for a model that stores one scale, per-tensor) symmetric int8 weights and int32 bias,
    in float32 arithmetic (reproducible in C)."""
    w = np.asarray(fh.weights, dtype=np.float32)
    b = np.asarray(fh.bias, dtype=np.float32)
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ModelError("cannot quantize a head with NaN or Inf weights")
    absmax = np.abs(w).max(axis=-1)
    if per_tensor:
        absmax = np.broadcast_to(absmax.max(axis=-1, keepdims=True), absmax.shape)
    scales = np.where(absmax > 0, absmax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    wq = np.clip(round_half_away(w / scales[..., None]), -127, 127).astype(np.int8)
    bias_scale = (np.float32(input_scale) * scales).astype(np.float32)
    bq = np.clip(round_half_away(b / bias_scale), INT32_MIN, INT32_MAX).astype(np.int32)
    return wq, scales, bq


def quantize_head(
    fh: FloatHead,
    input_scale: float,
    input_zero_point: int,
    calib_features: np.ndarray,
    per_tensor: bool = False,
) -> Int8Head:
    """Re-quantize a float head to int8 as the TFLite converter would, calibrated on int8 features.

    The logit range is taken from the int32 accumulators of the quantized weights on ``calib_features``
    times their scale (exact, so a board computes the same scale and zero point bit for bit).
    """
    wq, scales, bq = quantize_weights(fh, input_scale, per_tensor)
    probe = Int8Head(wq, scales, bq, input_scale, input_zero_point, 1.0, 0)
    feats = np.asarray(calib_features, dtype=np.int8).reshape(-1, wq.shape[1])
    if len(feats) == 0:
        raise ModelError("re-quantizing a head needs at least one calibration feature vector")
    acc = head_accumulators(probe, feats)
    real = acc.astype(np.float32) * (np.float32(probe.input_scale) * scales)
    out_scale, out_zp = logit_range_to_qparams(float(real.min()), float(real.max()))
    return probe.with_(output_scale=out_scale, output_zero_point=out_zp)


def predict_int8(head: Int8Head, features: np.ndarray) -> np.ndarray:
    """Class predictions: argmax of the int8 logits, ties to the lowest class index (as the C code does)."""
    classes: np.ndarray = np.argmax(head_forward_int8(head, features), axis=-1)
    return classes


def dequantized_features(features: np.ndarray, head: Int8Head) -> np.ndarray:
    """The float32 features a board trains on."""
    return dequantize(features, head.input_scale, head.input_zero_point)


def tail_for_head(tail: HeadTail, head: Int8Head) -> HeadTail:
    """The ops after ``head`` as the model holds them once the head is written: the logit tensor is shared with
    the next op (and carried through RESHAPEs), so their input quantization is the head's output quantization."""
    ops, follow = [], True
    scale, zp = head.output_scale, head.output_zero_point
    for op in tail.ops:
        if follow and op.kind == "RESHAPE":
            op = replace(op, input_scale=scale, input_zero_point=zp, output_scale=scale, output_zero_point=zp)
        elif follow:
            op, follow = replace(op, input_scale=scale, input_zero_point=zp), False
        ops.append(op)
    return HeadTail(tuple(ops))


def predict_through(head: Int8Head, tail: HeadTail, features: np.ndarray) -> np.ndarray:
    """What a board predicts: argmax of the model's output (the head, then the ops after it), ties to the lowest."""
    if not tail.ops:
        return predict_int8(head, features)
    return tail_for_head(tail, head).predict(head_forward_int8(head, features))
