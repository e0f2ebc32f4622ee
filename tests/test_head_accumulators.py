"""The int8 head's accumulators (fedtiny/ondevice/head.py) are TFLite's int32 arithmetic exactly, though taken
by a float64 matrix product: compared with the int32 matmul they replace, extremes and wrap-around included."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.ondevice.head import Int8Head, head_accumulators


def _int32_reference(head: Int8Head, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        acc = (x.astype(np.int32) - np.int32(head.input_zero_point)) @ head.weights.astype(np.int32).T
        return (acc + head.bias.astype(np.int32)).astype(np.int64)


@pytest.mark.parametrize("dim", [1, 64, 1024, 4096])
def test_accumulators_equal_int32_arithmetic(dim: int) -> None:
    rng = np.random.default_rng(dim)
    w = rng.integers(-128, 128, (7, dim)).astype(np.int8)
    w[0] = -128  # the extremes: the largest products
    bias = rng.integers(-(2**31), 2**31 - 1, 7, dtype=np.int64).astype(np.int32)
    bias[1] = 2**31 - 1  # sums past int32 wrap, as the int32 arithmetic does
    for zp in (-128, 0, 127):
        head = Int8Head(w, np.full(7, 0.01, np.float32), bias, 0.05, zp, 0.1, 0)
        x = rng.integers(-128, 128, (3, 5, dim)).astype(np.int8)
        x[0, 0] = -128 if zp > 0 else 127
        got = head_accumulators(head, x)
        assert got.shape == (3, 5, 7) and got.dtype == np.int64
        assert np.array_equal(got, _int32_reference(head, x))
