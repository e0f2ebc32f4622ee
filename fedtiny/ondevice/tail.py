"""The int8 ops after a classifier's head (its *tail*), exactly as TFLite Micro computes them.

Real int8 classifiers end in ``FULLY_CONNECTED -> SOFTMAX`` (sometimes with a RESHAPE, a LOGISTIC, an
int8->int8 QUANTIZE or a float DEQUANTIZE in between or after). ``head_forward_int8`` gives the head's int8
logits; a ``HeadTail`` turns them into the model's final output, bit for bit as TFLite Micro's reference
kernels do (docs/ondevice.md, "The tail after the head"). numpy only: this runs in Ray workers and on the
simulated boards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.quant import (
    INT32_MAX,
    dequantize,
    multiply_by_quantized_multiplier,
    quantize_multiplier_uncapped,
    round_half_away,
    rounding_divide_by_pot,
    rounding_half_sum,
    saturating_rounding_doubling_high_mul,
    saturating_rounding_multiply_by_pot,
    wrap_int32,
)

#: the op kinds a tail may hold, by their TFLite builtin names
TAIL_KINDS = ("SOFTMAX", "LOGISTIC", "RESHAPE", "QUANTIZE", "DEQUANTIZE")

#: the only int8 output quantization TFLM's int8 SOFTMAX/LOGISTIC accept (checked in their Prepare)
PROB_SCALE = 1.0 / 256.0
PROB_ZERO_POINT = -128

# Integer bits of the fixed-point formats TFLM's kernels use (Q5.26 softmax input, Q12.19 sum of
# exponentials, Q4.27 logistic input); they fix the multipliers and the clamping radii.
_SOFTMAX_DIFF_BITS = 5
_SOFTMAX_ACCUM_BITS = 12
_LOGISTIC_INPUT_BITS = 4

# gemmlowp's exp() constants: exp(-1/8), 1/3, and exp(-2^k) for the barrel shifter, all in Q0.31.
_EXP_MINUS_ONE_EIGHTH = 1895147668
_ONE_THIRD = 715827883
_EXP_BARREL = (
    (-2, 1672461947),
    (-1, 1302514674),
    (0, 790015084),
    (1, 290630308),
    (2, 39332535),
    (3, 720401),
    (4, 242),
)
# Newton-Raphson start for 1/(1+x): 48/17 and -32/17 in Q2.29.
_48_OVER_17 = 1515870810
_NEG_32_OVER_17 = -1010580540


def _f32(x: float) -> float:
    """The float32 value a flatbuffer stores, as a Python float (exact, JSON round-trips it)."""
    return float(np.float32(x))


# --- gemmlowp fixed-point functions (int32 raw values in int64 arrays) ------------------------------


def _mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """FixedPoint multiply: the integer bits of the operands add up; the raw op is VQRDMULH."""
    return saturating_rounding_doubling_high_mul(a, b)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (4th-order Taylor around -1/8)."""
    x = wrap_int32(a + (1 << 28))  # a + 1/8
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap_int32(_mul(wrap_int32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return wrap_int32(_EXP_MINUS_ONE_EIGHTH + _mul(_EXP_MINUS_ONE_EIGHTH, wrap_int32(x + poly)))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values``: exp(a) for a <= 0 given as raw Q(integer_bits), result Q0.31."""
    a = np.asarray(a, dtype=np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap_int32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits)  # Rescale<0>
    )
    remainder = wrap_int32(a_mod_quarter_minus_one_quarter - a)
    # Barrel shifter: multiply by exp(-2^k) for every bit k of the remaining whole quarters.
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = np.int64(1) << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, _mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), np.int64(0), result)  # exp(< -32) = 0
    return np.where(a == 0, np.int64(INT32_MAX), result)


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: 1/(1+a), Q0.31 in and out (3 Newton-Raphson steps)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)  # (1 + a) / 2 in Q0.31
    x = wrap_int32(_48_OVER_17 + _mul(half_denominator, _NEG_32_OVER_17))  # Q2.29
    for _ in range(3):
        one_minus_half_denominator_times_x = wrap_int32((1 << 29) - _mul(half_denominator, x))
        x = wrap_int32(
            x + saturating_rounding_multiply_by_pot(_mul(x, one_minus_half_denominator_times_x), 2)
        )
    return saturating_rounding_multiply_by_pot(x, 1)  # x/2 read as Q1.30, rescaled to Q0.31


def logistic_fixed(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp ``logistic``: 1/(1+exp(-a)) for raw Q(integer_bits) input, Q0.31 result."""
    a = np.asarray(a, dtype=np.int64)
    abs_a = np.where(a > 0, a, wrap_int32(-a))
    if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap_int32(-abs_a), integer_bits))
    if_negative = wrap_int32(INT32_MAX - if_positive)
    return np.where(a == 0, np.int64(1 << 30), np.where(a > 0, if_positive, if_negative))


def _count_leading_zeros_u32(x: np.ndarray) -> np.ndarray:
    """clz of positive int32 values (exact: float64 holds them, frexp's exponent is the bit length)."""
    return 32 - np.frexp(np.asarray(x, dtype=np.float64))[1].astype(np.int64)


# --- the ops ---------------------------------------------------------------------------------------------


class TailOpDict(TypedDict):
    """A :class:`TailOp` as JSON (``to_dict``); ``beta`` is left out by older files (1.0)."""

    kind: str
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    beta: NotRequired[float]


@dataclass(frozen=True)
class TailOp:
    """One op after the head, with the quantization of its input and output tensors as in the .tflite.

    For DEQUANTIZE the output is float32 and ``output_scale``/``output_zero_point`` are not used. RESHAPE
    must keep the last (class) dimension: it copies bytes, so only the class axis matters to what follows.
    """

    kind: str
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    beta: float = 1.0  # SOFTMAX only

    def __post_init__(self) -> None:
        if self.kind not in TAIL_KINDS:
            raise ModelError(
                f"unsupported op after the head: {self.kind} (supported: {', '.join(TAIL_KINDS)})"
            )
        # Stored as the flatbuffer stores them (float32 scales and beta), so the multipliers come out identical.
        object.__setattr__(self, "input_scale", _f32(self.input_scale))
        object.__setattr__(self, "output_scale", _f32(self.output_scale))
        object.__setattr__(self, "beta", _f32(self.beta))
        object.__setattr__(self, "input_zero_point", int(self.input_zero_point))
        object.__setattr__(self, "output_zero_point", int(self.output_zero_point))
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ModelError(f"{self.kind}: input scale must be a positive number, got {self.input_scale}")
        # TFLM refuses these in Prepare, so a model that breaks them never runs on a board.
        if self.kind == "SOFTMAX" and (self.output_scale, self.output_zero_point) != (
            PROB_SCALE,
            PROB_ZERO_POINT,
        ):
            raise ModelError(
                f"int8 SOFTMAX output must have scale 1/256 and zero point -128, got "
                f"{self.output_scale} / {self.output_zero_point}"
            )
        if self.kind == "LOGISTIC" and self.output_zero_point != PROB_ZERO_POINT:
            raise ModelError(f"int8 LOGISTIC output must have zero point -128, got {self.output_zero_point}")
        if self.kind == "QUANTIZE" and not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise ModelError(f"QUANTIZE: output scale must be a positive number, got {self.output_scale}")

    # -- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> TailOpDict:
        """JSON-able; the floats are float32-exact, so ``from_dict(to_dict())`` is identical."""
        return {
            "kind": self.kind,
            "input_scale": self.input_scale,
            "input_zero_point": self.input_zero_point,
            "output_scale": self.output_scale,
            "output_zero_point": self.output_zero_point,
            "beta": self.beta,
        }

    @classmethod
    def from_dict(cls, d: TailOpDict) -> TailOp:
        try:
            return cls(
                kind=str(d["kind"]),
                input_scale=float(d["input_scale"]),
                input_zero_point=int(d["input_zero_point"]),
                output_scale=float(d["output_scale"]),
                output_zero_point=int(d["output_zero_point"]),
                beta=float(d.get("beta", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"invalid tail op {d!r}: {exc}") from None

    # -- arithmetic ---------------------------------------------------------------------------------------

    def apply(self, x: np.ndarray) -> np.ndarray:
        """This op on int8 ``x`` (last axis = classes): int8, or float32 for DEQUANTIZE."""
        if self.kind == "RESHAPE":
            return x  # TFLM copies the bytes; the quantization is carried over unchanged
        if self.kind == "DEQUANTIZE":
            return dequantize(x, self.input_scale, self.input_zero_point)
        if self.kind == "QUANTIZE":
            return self._requantize(x)
        if self.kind == "LOGISTIC":
            return self._logistic(x)
        return self._softmax(x)

    def softmax_params(self) -> tuple[int, int, int]:
        """(input_multiplier, input_left_shift, diff_min) as TFLM's CalculateSoftmaxParams derives them."""
        # PreprocessSoftmaxScaling: beta * scale as a Q5.26 multiplier, capped below 2^31 (in double).
        real = min(self.beta * self.input_scale * (1 << (31 - _SOFTMAX_DIFF_BITS)), (1 << 31) - 1.0)
        if real <= 1.0:  # TFLM's QuantizeMultiplierGreaterThanOne aborts in Prepare
            raise ModelError(
                f"SOFTMAX: beta * input scale = {self.beta * self.input_scale} is too small for TFLM"
            )
        multiplier, left_shift = quantize_multiplier_uncapped(real)
        # CalculateInputRadius: the largest |diff| whose rescaled value cannot overflow Q5.26; exact floor.
        radius = (((1 << _SOFTMAX_DIFF_BITS) - 1) << (31 - _SOFTMAX_DIFF_BITS)) >> left_shift
        return multiplier, left_shift, -radius

    def _softmax(self, x: np.ndarray) -> np.ndarray:
        # TFLM reference_ops::Softmax<int8, int8> (the pip tflite_micro build runs the reference kernel).
        multiplier, left_shift, diff_min = self.softmax_params()
        q = np.asarray(x, dtype=np.int64)
        diff = q - q.max(axis=-1, keepdims=True)
        used = diff >= diff_min  # smaller differences contribute exactly 0 and give -128
        # MultiplyByQuantizedMultiplierGreaterThanOne: (diff << left_shift) in int32, then VQRDMULH.
        scaled = saturating_rounding_doubling_high_mul(
            wrap_int32(np.where(used, diff, 0) << left_shift), multiplier
        )
        exp_q0 = exp_on_negative_values(scaled, _SOFTMAX_DIFF_BITS)
        # Sum of exponentials in Q12.19: each term rounded down from Q0.31 (Rescale<12>), int32 adds.
        terms = np.where(used, rounding_divide_by_pot(exp_q0, _SOFTMAX_ACCUM_BITS), 0)
        sum_of_exps = wrap_int32(terms.sum(axis=-1, keepdims=True))
        # GetReciprocal: normalize the sum to [1, 2), then 1/(1+x) by Newton-Raphson.
        headroom_plus_one = _count_leading_zeros_u32(sum_of_exps)
        num_bits_over_unit = _SOFTMAX_ACCUM_BITS - headroom_plus_one
        shifted_sum_minus_one = wrap_int32(((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
        shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
        exponent = num_bits_over_unit + 31 - 8  # to 8-bit output (scale 1/256)
        unsat = rounding_divide_by_pot(_mul(shifted_scale, exp_q0), exponent)
        out = np.where(used, np.clip(unsat - 128, -128, 127), -128)
        return out.astype(np.int8)

    def logistic_params(self) -> tuple[int, int, int]:
        """(input_multiplier, input_left_shift, input_range_radius) as TFLM's LogisticPrepare derives them."""
        real = self.input_scale * float(1 << (31 - _LOGISTIC_INPUT_BITS))
        q, left_shift = math.frexp(real)
        if left_shift < 0:  # (1 << negative) in CalculateInputRadius: no TFLM model gets here
            raise ModelError(f"LOGISTIC: input scale {self.input_scale} is too small for TFLM")
        # No 2^31 round-up fix here (unlike QuantizeMultiplier); a float32 scale has 24 significant bits,
        # so q * 2^31 is an exact integer below 2^31.
        multiplier = int(round_half_away(q * (1 << 31)))  # TfLiteRound
        radius = (((1 << _LOGISTIC_INPUT_BITS) - 1) << (31 - _LOGISTIC_INPUT_BITS)) >> left_shift
        return multiplier, left_shift, radius

    def _logistic(self, x: np.ndarray) -> np.ndarray:
        # TFLM reference_integer_ops::Logistic (int8): Q4.27 input, gemmlowp logistic, Q0.7 output - 128.
        multiplier, left_shift, radius = self.logistic_params()
        d = np.asarray(x, dtype=np.int64) - self.input_zero_point
        inside = (d > -radius) & (d < radius)
        q4 = multiply_by_quantized_multiplier(
            np.where(inside, d, 0), np.asarray(multiplier), np.asarray(left_shift)
        )
        out_q0 = logistic_fixed(q4, _LOGISTIC_INPUT_BITS)
        out = np.clip(rounding_divide_by_pot(out_q0, 31 - 8) - 128, -128, 127)
        # The radius tests come first, in this order: with radius 0 even d == 0 gives -128.
        out = np.where(d <= -radius, -128, np.where(d >= radius, 127, out))
        return out.astype(np.int8)

    def _requantize(self, x: np.ndarray) -> np.ndarray:
        # TFLM QUANTIZE int8 -> int8: reference_ops::Requantize with QuantizeMultiplier(in_scale / out_scale).
        multiplier, shift = quantize_multiplier_uncapped(self.input_scale / self.output_scale)
        d = np.asarray(x, dtype=np.int64) - self.input_zero_point
        out: np.ndarray = (
            multiply_by_quantized_multiplier(d, np.asarray(multiplier), np.asarray(shift))
            + self.output_zero_point
        )
        return out.clip(-128, 127).astype(np.int8)


@dataclass(frozen=True)
class HeadTail:
    """The ops between the head's logits and the model's output, in execution order (empty = identity)."""

    ops: tuple[TailOp, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        for i, op in enumerate(ops):
            if op.kind == "DEQUANTIZE" and i != len(ops) - 1:
                raise ModelError("DEQUANTIZE must be the last op after the head (its output is float)")
            if i > 0:
                prev = ops[i - 1]
                # Consecutive ops share a tensor: a mismatch means the tail was read wrongly.
                if (prev.output_scale, prev.output_zero_point) != (op.input_scale, op.input_zero_point):
                    raise ModelError(
                        f"tail op {i} ({op.kind}) input quantization {op.input_scale}/{op.input_zero_point} "
                        f"differs from op {i - 1} ({prev.kind}) output {prev.output_scale}/{prev.output_zero_point}"
                    )

    @property
    def output_dtype(self) -> type[np.generic]:
        """np.float32 if the model's output is float (DEQUANTIZE at the end), else np.int8."""
        return np.float32 if self.ops and self.ops[-1].kind == "DEQUANTIZE" else np.int8

    def apply(self, logits_int8: np.ndarray) -> np.ndarray:
        """The model's final output for int8 head logits ``[..., C]`` (int8, or float32 after DEQUANTIZE)."""
        x = np.asarray(logits_int8)
        if x.dtype != np.int8:
            raise ModelError(f"tail input must be the head's int8 logits, got {x.dtype}")
        for op in self.ops:
            x = op.apply(x)
        return x

    def predict(self, logits_int8: np.ndarray) -> np.ndarray:
        """argmax of the final output over the last axis, ties to the lowest index (as a board's loop)."""
        classes: np.ndarray = np.argmax(self.apply(logits_int8), axis=-1)
        return classes

    def describe(self) -> str:
        """The op kinds joined by arrows, e.g. ``"RESHAPE → SOFTMAX"``; ``"(none)"`` for the identity."""
        return " → ".join(op.kind for op in self.ops) if self.ops else "(none)"

    def to_list(self) -> list[TailOpDict]:
        return [op.to_dict() for op in self.ops]

    @classmethod
    def from_list(cls, items: list[TailOpDict]) -> HeadTail:
        return cls(tuple(TailOp.from_dict(d) for d in items))
