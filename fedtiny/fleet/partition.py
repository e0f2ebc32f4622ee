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
    arr: np.ndarray = np.minimum(labels, num_classes - 1)
    return arr


#: the most devices one gateway serves when the scenario leaves ``devices_per_gateway`` to fedtiny: a reply of
#: 50,000 heads of 64 x 10 float32 is 130 MB, which Ray's object store moves in well under a second
MAX_DEVICES_PER_GATEWAY = 50_000


def auto_devices_per_gateway(devices: int, cpus: float, cpus_per_gateway: float) -> int:
    """Devices per gateway when ``fleet.devices_per_gateway = 0`` (docs/scale.md, "Gateways").

    Ray runs ``slots = floor(cpus / cpus_per_gateway)`` gateways at once; fedtiny makes the number of gateways
    a multiple of the slots (every wave of a round is full, no core idles while one gateway finishes) and large
    enough that no gateway serves more than ``MAX_DEVICES_PER_GATEWAY`` devices, and never more gateways than
    devices: ``gateways = min(devices, ceil(max(slots, ceil(devices / MAX)) / slots) * slots)``.
    """
    slots = max(1, int(cpus / cpus_per_gateway + 1e-9))
    gateways = max(slots, -(-devices // MAX_DEVICES_PER_GATEWAY))
    gateways = min(devices, -(-gateways // slots) * slots)
    return max(1, -(-devices // max(gateways, 1)))


def local_cpus() -> float:
    """This machine's CPUs: what the local Ray fedtiny starts counts (the driver and Flower's ServerApp process
    compute the same layout from it, whatever Ray is connected to)."""
    import os

    return float(os.cpu_count() or 1)
