"""Counter-based shuffling: a device's sample order depends only on (seed, round, device id, epoch).

So one device trained alone, the same device trained inside a batch of 100,000, and the C firmware all
visit samples in the same order. The mixer is splitmix64's finalizer (public domain, trivial in C).
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray | np.integer | int) -> np.ndarray:
    """splitmix64 finalizer on uint64 (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, round_: int, device_ids: np.ndarray, epoch: int) -> np.ndarray:
    """uint64 key per device: ``mix(mix(mix(mix(seed) ^ round) ^ device) ^ epoch)``."""
    k_round = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ np.uint64(round_)
    k_device = mix64(k_round) ^ np.asarray(device_ids, dtype=np.uint64)
    return mix64(mix64(k_device) ^ np.uint64(epoch))


def sample_order(keys: np.ndarray, counts: np.ndarray, capacity: int) -> np.ndarray:
    """Visit order [K, capacity] of cache slots: slots sorted by ``mix(key ^ (slot + 1) * GOLDEN)``.

    Slots at or beyond a device's count sort last (they are never visited). Ties (a 2^-64 event) keep slot order.
    """
    slots = np.arange(capacity, dtype=np.uint64)
    with np.errstate(over="ignore"):
        salt = (slots + np.uint64(1)) * _GOLDEN
    sort_keys = mix64(np.asarray(keys, dtype=np.uint64)[:, None] ^ salt[None, :])
    invalid = slots[None, :] >= np.asarray(counts, dtype=np.uint64)[:, None]
    sort_keys = np.where(invalid, np.uint64(0xFFFFFFFFFFFFFFFF), sort_keys)
    return np.argsort(sort_keys, axis=1, kind="stable")
