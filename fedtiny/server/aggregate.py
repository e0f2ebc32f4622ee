"""Validation of per-device float heads before aggregation: NaN/Inf, wrong shape or absurd norm are rejected
and counted. Aggregation itself is a Flower strategy with devices as its clients (fedtiny/server/strategy.py);
the caller re-quantizes its float head to int8 (the redeployed model is always the int8 quantization of the
aggregate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Validation:
    accepted: np.ndarray  # bool [K]
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return int((~self.accepted).sum())


def validate_updates(
    w: np.ndarray, b: np.ndarray, global_w: np.ndarray, global_b: np.ndarray, max_norm: float
) -> Validation:
    """Accept an update only if it is finite, has the head's shape and a plausible norm."""
    k = w.shape[0]
    if (
        w.ndim != 3
        or b.ndim != 2
        or w.shape[1:] != global_w.shape
        or b.shape[1:] != global_b.shape
        or b.shape[0] != k
    ):
        return Validation(np.zeros(k, dtype=bool), {"wrong_shape": k})
    finite = np.isfinite(w).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.concatenate([(w - global_w).reshape(k, -1), b - global_b], axis=1)
        norm = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))
    sane = finite & (norm <= max_norm)
    return Validation(
        sane, {"non_finite": int((~finite).sum()), "norm_too_large": int((finite & ~sane).sum())}
    )
