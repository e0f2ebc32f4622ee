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
    q: np.ndarray = round_half_away(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return q.clip(-128, 127).astype(np.int8)


# --- gemmlowp fixed-point primitives (int32 semantics, vectorized over int64 arrays) --------------------
# The activations after a head (softmax, logistic) are written in gemmlowp's fixed-point arithmetic in
# TFLite Micro's reference kernels. Values are carried in int64 numpy arrays holding int32 values; where C
# would wrap a 32-bit add or shift, ``wrap_int32`` does the same, so the results match bit for bit.


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's complement int32 wrap of int64 values (what a 32-bit add/shift does on the targets)."""
    return ((np.asarray(x, dtype=np.int64) + 2**31) % 2**32) - 2**31


def saturating_rounding_doubling_high_mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` for int32 (ARM VQRDMULH): round(a*b / 2^31)."""
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    ab = a64 * b64  # |a*b| <= 2^62: exact in int64
    num = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C division truncates toward zero
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: arithmetic right shift rounding to nearest, ties away from zero."""
    x64 = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + ((x64 & mask) > threshold)


def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` for int32.

    A positive exponent is a left shift saturated to int32 (note gemmlowp saturates ``-2^(31-e)`` too, as
    it compares against ``-threshold``); a negative one is ``RoundingDivideByPOT``.
    """
    x64 = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x64
    if exponent < 0:
        return rounding_divide_by_pot(x64, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x64 << exponent)
    return np.where(
        x64 > threshold, np.int64(INT32_MAX), np.where(x64 < -threshold, np.int64(INT32_MIN), shifted)
    )


def rounding_half_sum(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingHalfSum`` for int32: (a + b) / 2 rounded half away from zero."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    num = s + np.where(s >= 0, np.int64(1), np.int64(-1))
    return np.where(num >= 0, num // 2, -((-num) // 2))  # C division truncates toward zero


def quantize_multiplier_uncapped(real_multiplier: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier`` as TFLite Micro builds it (double rounding): no cap on the shift.

    Identical to ``quantize_multiplier`` below a multiplier of 2^30; above it the shift may reach 31
    (TFLM only caps it at 30 in single-rounding builds). The softmax prologue can get there.
    """
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift
