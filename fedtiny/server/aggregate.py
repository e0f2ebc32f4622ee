"""Server-side aggregation of per-device float heads: FedAvg and its family, robust aggregators.

Every aggregator takes the round's global float head and the stacked device heads, and returns the new
float head; the caller re-quantizes it to int8 (the redeployed model is always the int8 quantization of the
aggregate). Updates are validated first: NaN/Inf, wrong shape or absurd norm are rejected and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedtiny.config.schema import StrategySection


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
    if w.ndim != 3 or b.ndim != 2 or w.shape[1:] != global_w.shape or b.shape[1:] != global_b.shape or b.shape[0] != k:
        return Validation(np.zeros(k, dtype=bool), {"wrong_shape": k})
    finite = np.isfinite(w).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.concatenate([(w - global_w).reshape(k, -1), b - global_b], axis=1)
        norm = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))
    sane = finite & (norm <= max_norm)
    return Validation(sane, {"non_finite": int((~finite).sum()), "norm_too_large": int((finite & ~sane).sum())})


def _flat(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([w.reshape(w.shape[0], -1), b], axis=1).astype(np.float64)


class Aggregator:
    """Stateful (server momentum / Adam moments) aggregation across rounds."""

    def __init__(self, cfg: StrategySection) -> None:
        self.cfg = cfg
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None

    def state(self) -> dict[str, np.ndarray]:
        """Server optimizer state (momentum / Adam moments) for checkpoints."""
        return {k: v for k, v in (("agg_m", self._m), ("agg_v", self._v)) if v is not None}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        self._m = np.array(st["agg_m"]) if "agg_m" in st else None
        self._v = np.array(st["agg_v"]) if "agg_v" in st else None

    def __call__(self, gw: np.ndarray, gb: np.ndarray, w: np.ndarray, b: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        g = _flat(gw[None], gb[None])[0]
        deltas = _flat(w, b) - g  # [K, P]
        if cfg.clip_norm > 0:
            norms = np.linalg.norm(deltas, axis=1, keepdims=True)
            deltas = deltas * np.minimum(1.0, cfg.clip_norm / np.maximum(norms, 1e-12))
        weights = n.astype(np.float64) / max(float(n.sum()), 1.0)
        if cfg.name == "median":
            step = np.median(deltas, axis=0)
        elif cfg.name == "trimmed_mean":
            cut = int(np.floor(cfg.trim * len(deltas)))
            srt = np.sort(deltas, axis=0)
            step = srt[cut : len(deltas) - cut].mean(axis=0) if len(deltas) > 2 * cut else np.median(deltas, axis=0)
        else:
            step = weights @ deltas  # FedAvg pseudo-gradient (negated)
        if cfg.name == "fedavgm":
            self._m = step if self._m is None else cfg.server_momentum * self._m + step
            step = cfg.server_lr * self._m
        elif cfg.name in ("fedadam", "fedyogi"):
            beta1, beta2, tau = cfg.server_momentum, 0.99, 1e-3
            self._m = (1 - beta1) * step if self._m is None else beta1 * self._m + (1 - beta1) * step
            sq = step * step
            if self._v is None:
                self._v = np.full_like(step, tau * tau)
            if cfg.name == "fedadam":
                self._v = beta2 * self._v + (1 - beta2) * sq
            else:
                self._v = self._v - (1 - beta2) * sq * np.sign(self._v - sq)
            step = cfg.server_lr * self._m / (np.sqrt(self._v) + tau)
        new = g + step
        c, d = gw.shape
        return new[: c * d].reshape(c, d).astype(np.float32), new[c * d :].astype(np.float32)
