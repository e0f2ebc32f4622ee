"""The pool rows in every device's ring-buffer cache, kept by a simulated gateway between rounds.

A generated fleet's cache is a pure function of (device, round) (:meth:`fedtiny.fleet.data.FleetData.
cache_indices`): slot ``s`` holds the newest sample number ``j`` that landed in it, and sample ``j`` of a
device is one pool row, drawn by counter-based hashes from the segment it was collected in. Between two rounds
only the slots that received new samples change (``new_samples_per_round`` of them; none in a fleet that
collects nothing new), so a gateway that keeps last round's rows draws only those: at 50,000 devices of 64
slots that is 3.2 million hashed draws (about 30 ms on one core) saved per round when nothing is collected,
and all but the new samples' otherwise. The rows are identical to a fresh draw (``tests/test_ring_cache.py``).

State per block of :data:`BLOCK` consecutive device ids: int32 rows [BLOCK, capacity] and the sample count
each device's rows were drawn at (-1: never). Blocks are allocated when a device of theirs first trains, up
to ``budget`` bytes per process (a Ray worker may serve several gateways: at a million devices of 64 slots,
256 MB for the whole fleet); past the budget the remaining devices are drawn afresh every round. Recorded
fleets (their caches are lists, not draws) are read as they are.
"""

from __future__ import annotations

import numpy as np

from fedtiny.fleet.data import FleetData

#: devices per block of kept rows
BLOCK = 8192


class CacheRows:
    """Ring-buffer cache rows of a fleet's devices, kept between rounds (see the module docstring)."""

    def __init__(self, data: FleetData, budget: int = 1 << 30) -> None:
        self.data = data
        self.budget = budget
        self.cap = data.capacity
        generated = data.pool.ndim == 4 and type(data).cache_indices is FleetData.cache_indices
        self.enabled = generated and data.pool2d.shape[0] < 2**31 and self.cap > 0
        self._rows: dict[int, np.ndarray] = {}  # block -> int32 [BLOCK, cap]
        self._drawn_at: dict[int, np.ndarray] = {}  # block -> int64 [BLOCK]: samples collected when drawn

    @property
    def blocks(self) -> int:
        """Blocks of devices whose rows are kept."""
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes + self._drawn_at[b].nbytes for b, r in self._rows.items())

    def _slots(self, t: int) -> np.ndarray:
        """Sample number in each slot after ``t`` samples were collected (the same for every device)."""
        slot = np.arange(min(t, self.cap), dtype=np.int64)
        return slot + self.cap * ((t - 1 - slot) // self.cap)

    def indices(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, int]:
        """What ``data.cache_indices(devices, round_)`` returns: pool rows [K, count] and count."""
        data = self.data
        if not self.enabled:
            return data.cache_indices(devices, round_)
        devs = np.asarray(devices, dtype=np.int64)
        t = data.collected(round_)
        j, seg = data.slot_samples(round_)
        count = len(j)
        out = np.empty((len(devs), count), dtype=np.int32)
        blocks = devs // BLOCK
        for blk in np.unique(blocks):
            at = np.flatnonzero(blocks == blk)
            rows = self._block(int(blk))
            if rows is None:  # over the budget: drawn afresh
                out[at] = data.draw_cache_rows(devs[at], j, seg)
                continue
            local = devs[at] - int(blk) * BLOCK
            drawn_at = self._drawn_at[int(blk)]
            for t_old in np.unique(drawn_at[local]):
                sel = local[drawn_at[local] == t_old]
                if t_old < 0 or min(int(t_old), self.cap) != count:
                    changed = np.arange(count)
                else:
                    changed = np.flatnonzero(self._slots(int(t_old)) != j)
                if len(changed):
                    fresh = data.draw_cache_rows(sel + int(blk) * BLOCK, j[changed], seg[changed])
                    rows[sel[:, None], changed[None, :]] = fresh
                drawn_at[sel] = t
            out[at] = rows[local, :count]
        return out, count

    def _block(self, blk: int) -> np.ndarray | None:
        if blk not in self._rows:
            need = BLOCK * (self.cap * 4 + 8)
            if self.nbytes + need > self.budget:
                return None
            self._rows[blk] = np.zeros((BLOCK, self.cap), dtype=np.int32)
            self._drawn_at[blk] = np.full(BLOCK, -1, dtype=np.int64)
        return self._rows[blk]


__all__ = ["BLOCK", "CacheRows"]
