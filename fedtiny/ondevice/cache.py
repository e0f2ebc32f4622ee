"""The board's bounded int8 feature cache: a ring buffer of (int8 feature vector, label) per device.

Vectorized over K devices: arrays [K, capacity, D]. Slot ``head % capacity`` is overwritten next, so the
cache always holds the newest ``capacity`` samples; training visits slots ``0 .. count-1``.
"""

from __future__ import annotations

import numpy as np

from fedtiny.errors import ModelError


class FeatureCache:
    """Ring buffers for ``num_devices`` devices with ``capacity`` int8 feature vectors of ``dim`` each."""

    def __init__(self, num_devices: int, capacity: int, dim: int) -> None:
        if capacity < 1 or dim < 1:
            raise ModelError("cache capacity and feature dimension must be >= 1")
        self.capacity = capacity
        self.dim = dim
        self.features = np.zeros((num_devices, capacity, dim), dtype=np.int8)
        self.labels = np.zeros((num_devices, capacity), dtype=np.int16)
        self.head = np.zeros(num_devices, dtype=np.int64)  # next slot to write (mod capacity)
        self.count = np.zeros(num_devices, dtype=np.int64)

    @property
    def num_devices(self) -> int:
        return int(self.features.shape[0])

    def push(self, features: np.ndarray, labels: np.ndarray, n_new: np.ndarray | None = None) -> None:
        """Append ``features`` [K, M, D] / ``labels`` [K, M]; device k takes its first ``n_new[k]`` rows."""
        k, m, d = features.shape
        if k != self.num_devices or d != self.dim or features.dtype != np.int8:
            raise ModelError(
                f"push expects int8 [{self.num_devices}, M, {self.dim}], got {features.dtype} {features.shape}"
            )
        take = (
            np.full(k, m, dtype=np.int64)
            if n_new is None
            else np.minimum(np.asarray(n_new, dtype=np.int64), m)
        )
        # Only the newest `capacity` rows of a push can survive, as on the board.
        for j in range(m):
            sel = np.nonzero(take > j)[0]
            if sel.size == 0:
                break
            slot = self.head[sel] % self.capacity
            self.features[sel, slot] = features[sel, j]
            self.labels[sel, slot] = labels[sel, j]
            self.head[sel] += 1
        self.count = np.minimum(self.count + take, self.capacity)

    def device(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The valid (features, labels) of device k in slot order."""
        n = int(self.count[k])
        return self.features[k, :n], self.labels[k, :n]
