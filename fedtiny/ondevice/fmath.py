"""The on-device float32 functions, defined exactly (docs/ondevice.md §3a): one ``exp``, one ``log``.

A library ``exp``/``log`` is not the same function everywhere: numpy dispatches float32 ``exp`` to AVX-512,
AVX2 or NEON code, libm differs between glibc, newlib and a vendor's toolchain. Training must give the same
bits on every CPU and on the boards, so the spec fixes its own: a range reduction and a polynomial, written as a
sequence of single IEEE-754 binary32 operations (each correctly rounded everywhere; no fused multiply-add). The
numpy functions here, the compiled fleet kernel (``fedtiny.ondevice.fast``) and the C firmware
(``ft_expf``/``ft_logf`` in ``firmware/core/ft_train.c``) evaluate exactly these operations in this order.

The constants are Cephes' ``expf``/``logf`` (relative error below 3e-7 on the ranges used).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

#: exp: arguments below this count as it (e^-87 = 1.65e-38, still a normal float32)
EXP_LO = F32(-87.0)
LOG2E = F32(1.44269504088896341)
LN2_HI = F32(0.693359375)
LN2_LO = F32(-2.12194440e-4)
EXP_POLY = tuple(
    F32(v)
    for v in (
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    )
)
SQRT_HALF = F32(0.707106781186547524)
LOG_POLY = tuple(
    F32(v)
    for v in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)


def exp_f32(v: np.ndarray) -> np.ndarray:
    """``exp(v)`` for ``v <= 0`` (logits minus their maximum) or NaN, float32, as docs/ondevice.md §3a.

    ``v < -87`` counts as ``-87``; ``k = floor(v·log2e + 0.5)``; ``r = (v − k·LN2_HI) − k·LN2_LO``;
    ``p`` = Horner of the six coefficients in ``r``; ``e = ((p·r)·r + r) + 1``; result ``e · 2^k`` with
    ``2^k`` built from its exponent bits (``k`` is at least −126, so it is a normal number; a NaN argument
    takes ``k = −126`` and stays NaN).
    """
    v = np.asarray(v, dtype=F32)
    v = np.where(v < EXP_LO, EXP_LO, v)
    fk = np.floor(v * LOG2E + F32(0.5))
    r = (v - fk * LN2_HI) - fk * LN2_LO
    fk = np.where(fk >= F32(-126.0), fk, F32(-126.0))  # only NaN fails the compare
    p = np.full(r.shape, EXP_POLY[0], dtype=F32)
    for c in EXP_POLY[1:]:
        p = p * r + c
    e = ((p * r) * r + r) + F32(1.0)
    two_k = ((fk.astype(np.int32) + np.int32(127)) << np.int32(23)).view(F32)
    return np.asarray(e * two_k, dtype=F32)


def log_f32(x: np.ndarray) -> np.ndarray:
    """``log(x)`` for ``x >= 1`` (a sum of exponentials, the largest of which is 1), float32, as §3a.

    ``x = m · 2^e`` with ``m`` in [0.5, 1) from the bits; if ``m < sqrt(1/2)``: ``e −= 1``, ``t = (m + m) − 1``,
    else ``t = m − 1``; ``z = t·t``; ``y`` = Horner of the nine coefficients in ``t``, then ``y = (y·t)·z``;
    ``y = y + e·LN2_LO``; ``y = y − 0.5·z``; ``res = (t + y) + e·LN2_HI``. NaN and +inf return themselves;
    anything not a positive normal number (never a sum of exponentials) gives NaN.
    """
    x = np.asarray(x, dtype=F32)
    bits = x.view(np.int32)
    e = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    m = ((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000)).view(F32)
    small = m < SQRT_HALF
    fe = np.where(small, e - 1, e).astype(F32)
    t = np.where(small, (m + m) - F32(1.0), m - F32(1.0))
    z = t * t
    y = np.full(t.shape, LOG_POLY[0], dtype=F32)
    for c in LOG_POLY[1:]:
        y = y * t + c
    y = (y * t) * z
    y = y + fe * LN2_LO
    y = y - F32(0.5) * z
    res = (t + y) + fe * LN2_HI
    res = np.where(x >= F32(1.17549435e-38), res, F32(np.nan))
    return np.asarray(np.where((x == F32(np.inf)) | np.isnan(x), x, res), dtype=F32)
