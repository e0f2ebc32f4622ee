"""Deterministic float64 math for the task generators and data front ends: the same bits on any CPU.

numpy's transcendental ufuncs (``np.sin``, ``np.cos``, ``np.exp``, ``np.log``, ``np.log10``, ``**`` with a float
exponent, ``np.hanning``, ``np.abs`` of complex numbers, even the complex multiply) have CPU-specific SIMD code (AVX2, AVX-512, ...) whose
last bits differ from machine to machine, and float BLAS (``@``, ``np.dot``, ``np.matmul``, ``np.einsum``) picks
its summation order by CPU. Float32 data computed with them then crosses int8 rounding boundaries differently
on different machines. The functions here use only IEEE-exact numpy operations (``+ - * /``, ``sqrt``,
``floor``, ``rint``, comparisons, ``frexp``, ``ldexp``; complex products spelled out, see :func:`mul_complex`), each a separate ufunc call (numpy never fuses a
multiply-add across calls), so their results are the same bits wherever they run. They are not correctly
rounded: within about 1 ulp of the true value (measured against numpy: relative error < 1e-15 for exp, log,
sin, cos away from the zeros of sin / cos; see tests/test_data_same_bits.py).

Algorithms: fdlibm's (Sun Microsystems, 1993; FreeBSD msun's kernels): Cody-Waite range reduction with split
constants (ln 2 in two parts for exp / log; pi/2 in three 33-bit parts for sin / cos, exact products for
``|n| < 2**20`` quadrants, so sin / cos accept ``|x| <= MAX_TRIG_ARG``), then fdlibm's minimax polynomials.

Known limit: the FFTs (scipy.fft / numpy.fft, pocketfft) are left as they are. On x86-64 pocketfft is compiled
for the baseline instruction set without runtime CPU dispatch, so it gives the same bits on any x86-64 CPU;
on ARM64 the compiler may contract multiply-adds into FMAs, so ARM64 and x86-64 may differ in the last bits.
Python's ``math`` module and numpy's random generators (ziggurat tails) call the C library's scalar functions,
which are also not covered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_TRIG_ARG",
    "abs_complex",
    "cos",
    "div_complex",
    "exp",
    "hann",
    "log",
    "log10",
    "log1p",
    "matmul_ordered",
    "mul_complex",
    "pow",
    "sin",
    "sincos",
]

# fdlibm e_exp.c / e_log.c
_LN2_HI = 6.93147180369123816490e-01  # 0x3fe62e42 0xfee00000: 32 significant bits, k * _LN2_HI exact
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_P = (
    1.66666666666666019037e-01,
    -2.77777777770155933842e-03,
    6.61375632143793436117e-05,
    -1.65339022054652515390e-06,
    4.13813679705723846039e-08,
)
_EXP_MAX = 7.09782712893383973096e02  # above: overflow to inf
_EXP_MIN = -7.45133219101941108420e02  # below: underflow to 0
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
_SQRT_HALF = 0.70710678118654752440
_LN10 = 2.30258509299404568402
_LOG10_2_HI = 3.01029995663611771306e-01
_LOG10_2_LO = 3.69423907715893078616e-13

# fdlibm e_rem_pio2.c (medium case): pi/2 in three 33-bit parts and their tails
_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_PIO2_3T = 8.47842766036889956997e-32
MAX_TRIG_ARG = 1.0e6  # |x| / (pi/2) < 2**20: n * _PIO2_k exact (33 + 20 bits)

# FreeBSD msun k_sin.c / k_cos.c
_S = (
    -1.66666666666666324348e-01,
    8.33333333332248946124e-03,
    -1.98412698298579493134e-04,
    2.75573137070700676789e-06,
    -2.50507602534068634195e-08,
    1.58969099521155010221e-10,
)
_C = (
    4.16666666666666019037e-02,
    -1.38888888888741095749e-03,
    2.48015872894767294178e-05,
    -2.75573143513906633035e-07,
    2.08757232129817482790e-09,
    -1.13596475577881948265e-11,
)


def _f64(x: npt.ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(r: np.ndarray, x: npt.ArrayLike) -> float | np.ndarray:
    """A Python float for scalar input, else the array."""
    return float(r) if np.ndim(x) == 0 and not isinstance(x, np.ndarray) else r


@overload
def exp(x: float | np.floating | np.integer) -> float: ...
@overload
def exp(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def exp(x: npt.ArrayLike) -> float | np.ndarray:
    """e**x in float64 (fdlibm's algorithm), the same bits on any CPU."""
    a = _f64(x)
    xc = np.clip(a, _EXP_MIN - 1.0, _EXP_MAX + 1.0)  # also maps +-inf into range; nan stays nan
    k = np.rint(xc * _INV_LN2)
    hi = xc - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    p1, p2, p3, p4, p5 = _EXP_P
    c = r - t * (p1 + t * (p2 + t * (p3 + t * (p4 + t * p5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    kk = np.nan_to_num(k).astype(np.int64)
    with np.errstate(over="ignore", under="ignore"):
        res = np.ldexp(y, kk)
    if not (np.all(a <= _EXP_MAX) and np.all(a >= _EXP_MIN)):  # overflow, underflow, nan
        res = np.where(a > _EXP_MAX, np.inf, res)
        res = np.where(a < _EXP_MIN, 0.0, res)
    return _out(res, x)


def _log_parts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For x > 0 finite: k, f, hfsq, s*(hfsq+R) with x = 2**k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2)."""
    safe = np.where((a > 0) & np.isfinite(a), a, 1.0)
    m, e = np.frexp(safe)  # m in [0.5, 1)
    small = m < _SQRT_HALF
    m = np.where(small, m * 2.0, m)
    k = (e - small).astype(np.float64)
    f = m - 1.0  # exact
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LG
    t1 = w * (lg2 + w * (lg4 + w * lg6))
    t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return k, f, hfsq, s * (hfsq + r)


def _log_special(a: np.ndarray, res: np.ndarray) -> np.ndarray:
    if np.all(a > 0) and np.all(a < np.inf):  # the common case: nothing to patch
        return res
    res = np.where(a == 0, -np.inf, res)
    res = np.where(a < 0, np.nan, res)
    res = np.where(a == np.inf, np.inf, res)
    return np.where(np.isnan(a), np.nan, res)


@overload
def log(x: float | np.floating | np.integer) -> float: ...
@overload
def log(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def log(x: npt.ArrayLike) -> float | np.ndarray:
    """Natural logarithm in float64 (fdlibm's algorithm), the same bits on any CPU."""
    a = _f64(x)
    k, f, hfsq, sr = _log_parts(a)
    res = k * _LN2_HI - ((hfsq - (sr + k * _LN2_LO)) - f)
    return _out(_log_special(a, res), x)


@overload
def log10(x: float | np.floating | np.integer) -> float: ...
@overload
def log10(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def log10(x: npt.ArrayLike) -> float | np.ndarray:
    """Base-10 logarithm in float64: k log10(2) + log(1+f) / ln(10), split constants; same bits anywhere."""
    a = _f64(x)
    k, f, hfsq, sr = _log_parts(a)
    lnf = f - (hfsq - sr)  # log(1 + f)
    res = k * _LOG10_2_HI + (k * _LOG10_2_LO + lnf / _LN10)
    return _out(_log_special(a, res), x)


@overload
def log1p(x: float | np.floating | np.integer) -> float: ...
@overload
def log1p(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def log1p(x: npt.ArrayLike) -> float | np.ndarray:
    """log(1 + x) in float64, accurate for small x (u = 1 + x; log(u) * x / (u - 1)); same bits anywhere."""
    a = _f64(x)
    u = 1.0 + a
    d = u - 1.0
    lu = _f64(log(u))
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.where(d == 0, a, lu * (a / np.where(d == 0, 1.0, d)))
    res = np.where(np.isinf(a) & (a > 0), np.inf, res)
    return _out(res, x)


@overload
def pow(base: float | np.floating | np.integer, exponent: float | np.floating | np.integer) -> float: ...
@overload
def pow(base: npt.ArrayLike, exponent: np.ndarray | Sequence[float]) -> np.ndarray: ...
@overload
def pow(base: np.ndarray | Sequence[float], exponent: npt.ArrayLike) -> np.ndarray: ...
def pow(base: npt.ArrayLike, exponent: npt.ArrayLike) -> float | np.ndarray:
    """base**exponent for base > 0 as exp(exponent * log(base)) in float64 (a few ulp); same bits anywhere.

    Not for bases <= 0. The rounding error of log(base) is multiplied by ``exponent * log(base)``: fine for
    the moderate results the generators need (10**(mel/2595), 10**(dB/10)), less accurate near overflow."""
    b, e = _f64(base), _f64(exponent)
    if np.any(b <= 0):
        raise ValueError("exactmath.pow: base must be > 0")
    if np.all(b == 10.0):  # log(10) to full precision: the error is then that of exp alone
        res = _f64(exp(e * _LN10))
    else:
        res = _f64(exp(e * _f64(log(b))))
    return _out(res, base if np.ndim(base) else exponent)


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s = fl(a + b) and its exact rounding error (Knuth)."""
    s = a + b
    bp = s - a
    ap = s - bp
    return s, (a - ap) + (b - bp)


def _rem_pio2(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = n pi/2 + (y0 + y1), |y0| <~ pi/4; n as int64 (fdlibm medium case, all three steps)."""
    big = np.abs(a) > MAX_TRIG_ARG
    if np.any(big):
        worst = float(np.max(np.abs(a[big & np.isfinite(a)]))) if np.any(big & np.isfinite(a)) else np.inf
        raise ValueError(
            f"exactmath sin/cos: argument {worst:g} outside the exactly reduced range |x| <= {MAX_TRIG_ARG:g}"
        )
    n = np.rint(a * _INV_PIO2)
    r = a - n * _PIO2_1  # exact: n * _PIO2_1 exact, and Sterbenz
    r, err = _two_sum(r, -(n * _PIO2_2))  # n * _PIO2_2 exact
    r, err2 = _two_sum(r, -(n * _PIO2_3))  # exact too
    tail = (err + err2) - n * _PIO2_3T
    y0 = r + tail
    y1 = (r - y0) + tail
    return n.astype(np.int64) & 3, y0, y1


def _k_sin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    s1, s2, s3, s4, s5, s6 = _S
    z = x * x
    w = z * z
    r = s2 + z * (s3 + z * s4) + z * w * (s5 + z * s6)
    v = z * x
    res: np.ndarray = x - ((z * (0.5 * y - v * r) - y) - v * s1)
    return res


def _k_cos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c1, c2, c3, c4, c5, c6 = _C
    z = x * x
    w = z * z
    r = z * (c1 + z * (c2 + z * c3)) + w * w * (c4 + z * (c5 + z * c6))
    hz = 0.5 * z
    w = 1.0 - hz
    res: np.ndarray = w + (((1.0 - w) - hz) + (z * r - x * y))
    return res


def sincos(x: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(sin x, cos x) in float64 for ``|x| <= MAX_TRIG_ARG`` (ValueError beyond); the same bits on any CPU."""
    a = _f64(x)
    q, y0, y1 = _rem_pio2(np.where(np.isfinite(a), a, 0.0))
    ks, kc = _k_sin(y0, y1), _k_cos(y0, y1)
    s = np.select([q == 0, q == 1, q == 2], [ks, kc, -ks], -kc)
    c = np.select([q == 0, q == 1, q == 2], [kc, -ks, -kc], ks)
    bad = ~np.isfinite(a)
    s = np.where(bad, np.nan, np.where(a == 0, a, s))  # sin(-0) = -0
    c = np.where(bad, np.nan, c)
    return s, c


@overload
def sin(x: float | np.floating | np.integer) -> float: ...
@overload
def sin(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def sin(x: npt.ArrayLike) -> float | np.ndarray:
    """sin x in float64 for ``|x| <= MAX_TRIG_ARG``; the same bits on any CPU."""
    return _out(sincos(x)[0], x)


@overload
def cos(x: float | np.floating | np.integer) -> float: ...
@overload
def cos(x: np.ndarray | Sequence[float]) -> np.ndarray: ...
def cos(x: npt.ArrayLike) -> float | np.ndarray:
    """cos x in float64 for ``|x| <= MAX_TRIG_ARG``; the same bits on any CPU."""
    return _out(sincos(x)[1], x)


def hann(m: int) -> np.ndarray:
    """np.hanning(m) (symmetric Hann, float64: 0.5 - 0.5 cos(2 pi n / (m - 1))), with exactmath's cos."""
    if m < 1:
        return np.zeros(0)
    if m == 1:
        return np.ones(1)
    n = np.arange(1 - m, m, 2)
    return 0.5 + 0.5 * _f64(cos(np.pi * n / (m - 1)))


def abs_complex(z: npt.ArrayLike) -> np.ndarray:
    """|z| = sqrt(re**2 + im**2) in float64 (re, im widened first; no hypot): the same bits on any CPU."""
    a = np.asarray(z)
    re = a.real.astype(np.float64)
    im = a.imag.astype(np.float64)
    re *= re
    im *= im
    re += im
    return np.sqrt(re, out=re)


def mul_complex(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """a * b for complex (or real) arrays, each product and sum a separate float64 operation (numpy's SIMD
    complex multiply may fuse them into FMAs): the same bits on any CPU, in ``np.result_type(a, b)``."""
    a, b = np.asarray(a), np.asarray(b)
    out_type = np.result_type(a, b)
    ar, br = a.real.astype(np.float64), b.real.astype(np.float64)
    ai = a.imag.astype(np.float64) if np.iscomplexobj(a) else None
    bi = b.imag.astype(np.float64) if np.iscomplexobj(b) else None
    if bi is None:
        if ai is None:
            prod: np.ndarray = ar * br
            return prod.astype(out_type, copy=False)
        re, im = ar * br, ai * br
    elif ai is None:
        re, im = ar * br, ar * bi
    else:
        re, im = ar * br - ai * bi, ar * bi + ai * br
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=out_type)
    out.real, out.imag = re, im
    return out


def div_complex(z: npt.ArrayLike, d: npt.ArrayLike) -> np.ndarray:
    """z / d for a complex ``z`` and a real ``d``: real and imaginary parts divided separately (numpy promotes
    ``d`` to complex and divides by its SIMD complex loop): the same bits on any CPU."""
    z, d = np.asarray(z), np.asarray(d)
    out = np.empty(np.broadcast_shapes(z.shape, d.shape), dtype=np.result_type(z, d))
    out.real, out.imag = z.real / d, z.imag / d
    return out


def matmul_ordered(
    a: npt.ArrayLike, b: npt.ArrayLike, *, accumulate: npt.DTypeLike = np.float64
) -> np.ndarray:
    """``a @ b`` for ``a [..., K]`` and ``b [K, N]`` summed over K in index order (no BLAS), the same bits on any
    CPU. Products and sums in ``accumulate`` (float64: products of float32 values are exact), the result in
    ``np.result_type(a, b)``.

    Where ``a`` is all finite, the terms with ``b[k, j] == 0`` are left out (a sparse ``b``, a mel filterbank,
    costs its non-zeros): adding a product of zero changes no sum (the sums start at +0 and never become -0),
    so the bits are those of the full loop."""
    a, b = np.asarray(a), np.asarray(b)
    if b.ndim != 2 or a.ndim < 1 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul_ordered: shapes {a.shape} and {b.shape} do not contract")
    out_type = np.result_type(a, b)
    lead = a.shape[:-1]
    at = np.ascontiguousarray(a.reshape(-1, a.shape[-1]).T, dtype=accumulate)  # [K, M]
    bt = np.asarray(b, dtype=accumulate)
    n = b.shape[1]
    acc = np.zeros((n, at.shape[1]), dtype=accumulate)  # [N, M]: one output column per row
    tmp = np.empty_like(acc)
    sparse = bool(np.all(np.isfinite(at)))
    for k in range(b.shape[0]):
        nz = np.flatnonzero(bt[k]) if sparse else np.arange(n)
        if 2 * len(nz) >= n:
            np.multiply(bt[k][:, None], at[k][None, :], out=tmp)
            acc += tmp
        else:
            for j in nz:
                acc[j] += at[k] * bt[k, j]
    return acc.T.reshape(*lead, n).astype(out_type)
