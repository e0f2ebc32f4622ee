"""TFLite integer arithmetic, exactly as TFLite Micro's reference kernels compute it.

Everything here is integer or explicitly-rounded IEEE arithmetic, so the C firmware reproduces it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """C's ``roundf``/``round``: halves away from zero (TFLite's ``TfLiteRound``). Exact for float32 inputs."""
    xd = np.asarray(x, dtype=np.float64)
    return np.sign(xd) * np.floor(np.abs(xd) + 0.5)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: a double in (0, 1) or above as (int32 Q31 multiplier, shift)."""
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        shift, q_fixed = 30, INT32_MAX
    return q_fixed, shift


def channel_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) as TFLM's PopulateConvolutionQuantizationParams computes them.

    The scales are float32 in the flatbuffer; TFLM widens them to double before multiplying.
    """
    in_s = float(np.float32(input_scale))
    out_s = float(np.float32(output_scale))
    mults = np.empty(len(weight_scales), dtype=np.int64)
    shifts = np.empty(len(weight_scales), dtype=np.int64)
    for c, ws in enumerate(np.asarray(weight_scales, dtype=np.float32)):
        mults[c], shifts[c] = quantize_multiplier(in_s * float(ws) / out_s)
    return mults, shifts


def multiply_by_quantized_multiplier(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding, the TFLM default), vectorized.

    ``acc`` is int32-valued; ``mult``/``shift`` broadcast against it (per output channel, last axis).
    """
    a = np.asarray(acc, dtype=np.int64)
    m = np.asarray(mult, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    left = np.where(s > 0, s, 0)
    right = np.where(s > 0, 0, -s)
    a = a << left
    a = ((a + 2**31) % 2**32) - 2**31  # int32 wrap, as the C multiply does on two's complement targets
    # SaturatingRoundingDoublingHighMul
    ab = a * m
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C division truncates toward zero
    overflow = (a == INT32_MIN) & (m == INT32_MIN)
    high = np.where(overflow, INT32_MAX, high)
    # RoundingDivideByPOT
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return np.asarray((high >> right) + (remainder > threshold), dtype=np.int64)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 → float32 as a board computes it: ``(q - zp) * scale`` in float32."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float → int8 as TFLite's QUANTIZE op: ``round(x / scale) + zp`` clamped to int8."""
    q = round_half_away(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)
