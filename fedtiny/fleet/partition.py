"""Non-IID label partition: each device draws its class mix from a Dirichlet(alpha)."""

from __future__ import annotations

import numpy as np


def dirichlet_labels(
    num_devices: int, num_classes: int, n: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Labels [num_devices, n]: device k's labels drawn from its own class mix ~ Dirichlet(alpha)."""
    mixes = rng.dirichlet(np.full(num_classes, alpha), size=num_devices)
    cum = np.cumsum(mixes, axis=1)
    u = rng.random((num_devices, n))
    labels = (u[:, :, None] > cum[:, None, :]).sum(axis=2)
    return np.minimum(labels, num_classes - 1)
