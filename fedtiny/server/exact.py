"""The server's float maths with the same bits on every CPU (x86-64 with or without AVX-512/AVX2, ARM64), any
thread count and any Ray node.

Where numpy's results depend on the CPU (measured on an AVX-512 machine with ``NPY_DISABLE_CPU_FEATURES`` and
``OPENBLAS_CORETYPE``, tests/test_server_same_bits.py):

- BLAS: ``@``, ``np.dot``, ``np.matmul``, ``np.einsum``, ``np.inner``, ``np.linalg.norm`` on floats go through
  OpenBLAS, whose kernel (and so its summation order) depends on the CPU and on its thread count;
- SIMD transcendental functions: ``np.exp``, ``np.log``, ``np.power`` (even with an integer-valued float
  exponent), ``np.tanh``, ... differ in the last bits between the AVX-512, AVX2 and baseline paths;
- summation in arrival or thread order.

What is the same everywhere: + - * / and ``sqrt`` (IEEE, correctly rounded), comparisons, min/max, sorting,
``np.median``, and numpy's own reductions (``np.sum``, ``np.add.reduce``, ``mean``): a fixed scalar
algorithm (pairwise along a contiguous axis, in index order along any other) whose order depends only on the
shape. So the server sums with numpy's reductions or Python loops in a fixed order (devices by id, gateways by
their first device), never with BLAS, and takes no transcendental function on anything that reaches the model
or the result files.

Flower's strategies use a few of the CPU-dependent operations themselves; :func:`install_flower_exact`
replaces those (module attributes of ``flwr.serverapp.strategy`` / ``flwr.supercore``) with the exact
definitions below before fedtiny calls a strategy.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flwr.app import ArrayRecord


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum a_i * b_i`` of two 1-D arrays in float64: the products rounded each, then numpy's pairwise sum
    (its order depends only on the length; no BLAS)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    return float(np.add.reduce(x * y)) if len(x) else 0.0


def weighted_rows(f: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_i f[i] * x[i]`` over the first axis of ``x`` in float64, rows added in index order (``np.add.reduce``
    along the first axis is a sequential loop over it; no BLAS)."""
    f64 = np.asarray(f, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    if not len(f64):
        return np.zeros(x64.shape[1:], dtype=np.float64)
    out: np.ndarray = np.add.reduce(f64.reshape((-1,) + (1,) * (x64.ndim - 1)) * x64, axis=0)
    return out


def ipow(x: float, n: int) -> float:
    """``x ** n`` for an integer ``n`` by repeated squaring in float64 (each product rounded as IEEE says: the
    same bits everywhere; numpy's ``power`` takes a SIMD ``pow`` whose last bits depend on the CPU)."""
    if n < 0:
        return 1.0 / ipow(x, -n)
    out, base = 1.0, float(x)
    while n:
        if n & 1:
            out *= base
        base *= base
        n >>= 1
    return out


def sq_norm(arrays: Sequence[np.ndarray]) -> float:
    """Squared L2 norm of several arrays together: float64 squares, numpy's pairwise sum per array, arrays in
    order (no BLAS ``nrm2``)."""
    tot = 0.0
    for a in arrays:
        v = np.asarray(a, dtype=np.float64).ravel()
        tot += float(np.add.reduce(v * v)) if len(v) else 0.0
    return tot


def pairwise_sq_dist(flat: np.ndarray) -> np.ndarray:
    """Squared L2 distances [n, n] between the rows of ``flat`` [n, d]: ``sum_j (x_ij - x_kj)^2`` in float64 with
    numpy's pairwise sum over ``j`` (blocks of rows, so that the [b, n, d] differences stay small; no BLAS)."""
    x = np.ascontiguousarray(flat, dtype=np.float64)
    n = x.shape[0]
    x = x.reshape(n, -1)
    d = x.shape[1]
    out = np.zeros((n, n), dtype=np.float64)
    if not d:
        return out
    step = max(1, (1 << 22) // max(1, n * d))
    for i in range(0, n, step):
        diff = x[i : i + step, None, :] - x[None, :, :]
        out[i : i + step] = np.add.reduce(diff * diff, axis=2)
    return out


# -- Flower's strategies ----------------------------------------------------------------------------------


def _compute_distances(records: list[ArrayRecord]) -> np.ndarray:
    """Exact replacement of ``flwr.serverapp.strategy.multikrum.compute_distances`` (Krum, MultiKrum, Bulyan):
    Flower computes ``|x|^2 + |y|^2 - 2 x.y`` with a float BLAS matrix product."""
    flat = np.stack(
        [np.concatenate(rec.to_numpy_ndarrays(), axis=None).ravel().astype(np.float64) for rec in records],
        axis=0,
    )
    return pairwise_sq_dist(flat)


def _get_norm(input_arrays: Sequence[np.ndarray]) -> float:
    """Exact replacement of ``flwr.supercore.differential_privacy.get_norm`` (the DP wrappers' clipping):
    Flower takes ``np.linalg.norm`` (BLAS) per array."""
    return float(np.sqrt(sq_norm(input_arrays)))


def _power(x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray | np.float64:
    """``np.power`` for FedAdam's bias correction ``beta ** (round + 1.0)``: an integer-valued scalar exponent
    by :func:`ipow`; anything else as numpy does."""
    if np.ndim(x) == 0 and np.ndim(y) == 0:
        yf = float(y)
        if yf.is_integer() and abs(yf) < 2**31:
            return np.float64(ipow(float(x), int(yf)))
    return np.power(x, y)


class _NumpyExactPower(types.ModuleType):
    """numpy, except :func:`_power` for ``power`` (what ``flwr.serverapp.strategy.fedadam`` sees as ``np``)."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.power = _power

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


_installed = False


def install_flower_exact() -> None:
    """Give Flower's strategies the exact operations above (once per process; idempotent). Left as Flower has
    them (documented in tests/test_server_same_bits.py): the DP wrappers' Gaussian noise (numpy's legacy
    ``normal``: glibc's ``log``, the same on x86-64 in our measurements), the adaptive wrappers' ``math.exp``
    of the clipping-norm update, and QFedAvg's ``np.float_power(loss, q)`` with a non-integer ``q``."""
    global _installed
    if _installed:
        return
    from flwr.serverapp.strategy import fedadam, multikrum
    from flwr.supercore import differential_privacy

    multikrum.compute_distances = _compute_distances
    differential_privacy.get_norm = _get_norm
    fedadam.np = _NumpyExactPower()  # type: ignore[attr-defined]  # its module-level numpy
    _installed = True
