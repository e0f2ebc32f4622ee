"""A fleet made of a user's recordings: the devices named in the data (or a Dirichlet partition of it).

Each device's examples are put in time order (``time``, else the data's order). Its latest
``data.test_fraction`` of its labelled examples are its local test set, fixed for the whole run, so evaluation
asks the real question: does learning on the past help on what comes next? Examples without a label (label
-1) are never tested: they go to the training stream, with pool label -1. The rest is its training stream: a share
``data.initial_fraction`` is collected before round 1 and the remainder arrives evenly over the rounds into
its ring-buffer cache (``fleet.cache_size``; slot ``j % capacity`` holds stream example ``j``).

Condition drift (generic knobs applied to the recorded signal before the front end) works as for generated
fleets: every distinct condition is a *variant*, and the pool holds each example under each variant its
devices need (``pool[v, i]``), featurized once by the real int8 model. An extra all-zero example with label
-1 pads the per-device test rows (devices hold different numbers of test examples); it is never correct.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.errors import DataError
from fedtiny.fleet.data import FLEET_DIR, FleetData, FleetLayout, build_plan
from fedtiny.fleet.spec import FleetSpec
from fedtiny.ondevice.tail import HeadTail

Featurize = Callable[[np.ndarray, dict[str, float]], np.ndarray]  # (example subset, condition) -> int8 [n, D]


@dataclass(frozen=True)
class DeviceStreams:
    """Per device: training examples in arrival order and local test examples (indices into the data)."""

    stream: np.ndarray  # int32 [K, T]: training examples in arrival order, -1 padding
    n_train: np.ndarray  # int64 [K]
    n_initial: np.ndarray  # int64 [K]: collected before round 1
    test: (
        np.ndarray
    )  # int32 [K, M]: local test examples, padded with the sentinel index (= number of examples)
    n_test: np.ndarray  # int64 [K]
    names: tuple[str, ...]  # device names (from the data, or "device-<k>" for a partition)


def _dirichlet_partition(y: np.ndarray, devices: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Device of every example: each class (and the examples without a label, -1) is split over the devices by
    Dirichlet(alpha) shares; every device ends with 2 examples or more, one of them labelled."""
    owner = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        shares = rng.dirichlet(np.full(devices, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
        for k, part in enumerate(np.split(idx, cuts)):
            owner[part] = k
    # every device needs a training and a test example: take them from the largest devices
    sizes = np.bincount(owner, minlength=devices)
    labelled = np.asarray(y) >= 0
    if labelled.all():
        for needy in np.flatnonzero(sizes < 2):
            k = int(needy)
            while sizes[k] < 2:
                donor = int(np.argmax(sizes))
                moved = np.flatnonzero(owner == donor)[-1]
                owner[moved] = k
                sizes[donor] -= 1
                sizes[k] += 1
        return owner
    # with unlabelled examples: first a labelled one (its test example) for every device, from the device with
    # the most; then 2 examples for every device, an unlabelled one from the largest device where it has one
    # (callers ensure len(y) >= 2 * devices and labelled.sum() >= devices)
    n_lab = np.bincount(owner[labelled], minlength=devices)
    for needy in np.flatnonzero(n_lab < 1):
        k = int(needy)
        donor = int(np.argmax(n_lab))
        moved = np.flatnonzero((owner == donor) & labelled)[-1]
        owner[moved] = k
        n_lab[donor] -= 1
        n_lab[k] += 1
        sizes[donor] -= 1
        sizes[k] += 1
    for needy in np.flatnonzero(sizes < 2):
        k = int(needy)
        while sizes[k] < 2:
            donor = int(np.argmax(sizes))
            spare = np.flatnonzero((owner == donor) & ~labelled)
            moved = spare[-1] if len(spare) else np.flatnonzero(owner == donor)[-1]
            n_lab[donor] -= int(labelled[moved])
            n_lab[k] += int(labelled[moved])
            owner[moved] = k
            sizes[donor] -= 1
            sizes[k] += 1
    return owner


def device_streams(
    y: np.ndarray,
    device: np.ndarray | None,
    time: np.ndarray | None,
    device_names: tuple[str, ...],
    devices: int,
    alpha: float,
    test_fraction: float,
    initial_fraction: float,
    seed: int,
    src: str,
) -> DeviceStreams:
    """Split every device's examples (time order) into its training stream and its latest labelled test examples.

    ``y`` = -1: the example has no label; it only ever goes to the training stream. A device keeps its latest
    ``round(test_fraction x L)`` labelled examples (L: how many it has; at least 1, and at least one example
    left to train) as its test set; a device with fewer than 2 examples, or with no labelled one, is left out."""
    n = len(y)
    labelled = np.asarray(y) >= 0
    if device is None:
        if n < 2 * devices:
            raise DataError(
                f"{src}: {n} examples cannot feed fleet.devices = {devices} devices (each needs at least "
                f"2: one to train, one to test); lower fleet.devices or add device ids to the data"
            )
        if int(labelled.sum()) < devices:
            raise DataError(
                f"{src}: {int(labelled.sum())} labelled examples cannot feed fleet.devices = {devices} devices "
                f"(each needs a labelled one to test); lower fleet.devices or add device ids to the data"
            )
        owner = _dirichlet_partition(y, devices, alpha, np.random.default_rng([seed, 0xDA7A]))
        names = tuple(f"device-{k}" for k in range(devices))
    else:
        ids, owner = np.unique(np.asarray(device), return_inverse=True)
        names = tuple(
            device_names[int(i)] if device_names and 0 <= int(i) < len(device_names) else str(i) for i in ids
        )
    if time is not None:  # by device, then time; examples recorded at the same time in a seeded random order
        when = np.asarray(time, dtype=np.float64)
        tie = np.random.default_rng([seed, 0x71E]).permutation(n)
    else:  # no time: the data's own order is the time order (npz/csv rows)
        when, tie = np.zeros(n), np.arange(n)
    order = np.lexsort((tie, when, owner))
    counts = np.bincount(owner, minlength=len(names))
    n_labelled = np.bincount(owner[labelled], minlength=len(names))
    keep = np.flatnonzero((counts >= 2) & (n_labelled >= 1))
    if not len(keep):
        if labelled.all():
            raise DataError(f"{src}: no device has 2 or more examples (one to train, one to test)")
        raise DataError(
            f"{src}: no device has 2 or more examples with a labelled one among them (one to train, a "
            f"labelled one to test)"
        )
    starts = np.concatenate([[0], np.cumsum(counts)])
    trains, tests = [], []
    for k in keep:
        ex = order[starts[k] : starts[k + 1]]
        lab = ex[labelled[ex]]  # time order
        m = min(max(1, int(round(test_fraction * len(lab)))), len(ex) - 1, len(lab))
        test_ex = lab[len(lab) - m :]
        # unlabelled examples recorded after the test examples train too: they have no label to leak
        trains.append(ex[~np.isin(ex, test_ex)])
        tests.append(test_ex)
    t_max, m_max = max(map(len, trains)), max(map(len, tests))
    stream = np.full((len(keep), t_max), -1, dtype=np.int32)
    test = np.full((len(keep), m_max), n, dtype=np.int32)
    for i, (tr, te) in enumerate(zip(trains, tests)):
        stream[i, : len(tr)], test[i, : len(te)] = tr, te
    n_train = np.array([len(t) for t in trains], dtype=np.int64)
    n_initial = np.maximum(1, np.floor(n_train * initial_fraction).astype(np.int64))
    return DeviceStreams(
        stream,
        n_train,
        n_initial,
        test,
        np.array([len(t) for t in tests], dtype=np.int64),
        tuple(names[k] for k in keep),
    )


def write_recorded_fleet(
    s: FleetSpec,
    streams: DeviceStreams,
    labels: np.ndarray,
    featurize: Featurize,
    default_condition: dict[str, float],
    num_classes: int,
    tail: HeadTail,
    out_dir: Path,
    log: Callable[[str], object] = print,
) -> FleetLayout:
    """Fleet plan and the pool of every example under every condition its devices meet, under ``out_dir/fleet``.

    ``s.fleet.devices`` must already be the number of devices in ``streams`` (:meth:`FleetSpec.with_devices`).
    ``labels`` = -1 (an example without a label) is written as it is: pool label -1, "never a class".
    """
    layout = s.layout
    plan = build_plan(s, layout, default_condition=default_condition, num_classes=num_classes)
    root = out_dir / FLEET_DIR
    root.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    k = len(streams.names)
    per_device = np.concatenate([streams.stream, streams.test], axis=1)  # every example a device owns
    pool: np.memmap | None = None
    for v, cond in enumerate(plan.conditions):
        users = np.flatnonzero((plan.variant == v).any(axis=0))
        need = np.unique(per_device[users])
        need = need[(need >= 0) & (need < n)]
        if not len(need):  # a condition no device meets: its rows stay zero and are never gathered
            continue
        feats = featurize(need, cond)
        if pool is None:
            dim = feats.shape[1]
            pool = np.lib.format.open_memmap(
                root / "pool_feats.npy", mode="w+", dtype=np.int8, shape=(len(plan.conditions), n + 1, dim)
            )
            pool[:] = 0
        pool[v, need] = feats
    assert pool is not None
    pool.flush()
    del pool
    trains = streams.stream[streams.stream >= 0]
    unlabelled = int(np.count_nonzero(np.asarray(labels)[trains] < 0))
    without = f", {unlabelled} of them without a label" if unlabelled else ""
    log(
        f"fleet: {k} devices from the data, {len(plan.conditions)} condition variant(s), {n} examples "
        f"({int(streams.n_train.sum())} to train{without}, {int(streams.n_test.sum())} to test)"
    )
    np.save(root / "pool_labels.npy", np.concatenate([labels, [-1]]).astype(np.int16))
    np.save(root / "variant.npy", plan.variant)
    np.save(root / "group.npy", plan.group)
    np.save(root / "board.npy", plan.board)
    np.save(root / "faulty.npy", plan.faulty)
    np.save(root / "speed.npy", plan.speed)
    np.savez(
        root / "streams.npz",
        stream=streams.stream,
        n_train=streams.n_train,
        n_initial=streams.n_initial,
        test=streams.test,
        n_test=streams.n_test,
    )
    meta = {
        "train": int(streams.n_initial.max()),
        "test": int(streams.test.shape[1]),
        "cache": s.fleet.cache_size,
        "new_per_round": 0,
        "seed": s.seed,
        "rounds": s.rounds,
        "fault": s.fleet.fault,
        "test_mix": "recorded",
        "conditions": plan.conditions,
        "boards": plan.boards,
        "kind": "recorded",
        "tail": tail.to_list(),
        "device_names": list(streams.names),
        **layout.__dict__,
    }
    (root / "layout.json").write_text(json.dumps(meta, indent=1))
    return layout


class RecordedFleetData(FleetData):
    """Read side of a recorded fleet: per-device streams instead of hashed draws from a generated pool."""

    def __init__(self, fleet_dir: str | Path) -> None:
        super().__init__(fleet_dir)
        st = np.load(self.root / "streams.npz")
        self.stream, self.n_train, self.n_init = st["stream"], st["n_train"], st["n_initial"]
        self.test, self.n_test_k = st["test"], st["n_test"]
        self.rounds = max(int(self.meta["rounds"]), 1)

    def collected_k(self, devices: np.ndarray, round_: int) -> np.ndarray:
        """Examples each device has collected when it trains in ``round_`` (round 0: the initial ones)."""
        d = np.asarray(devices, dtype=np.int64)
        n0, t = self.n_init[d], self.n_train[d]
        r = min(max(round_, 0), self.rounds)
        arr: np.ndarray = n0 + ((t - n0) * r) // self.rounds
        return arr

    def cache_counts(self, devices: np.ndarray, round_: int) -> np.ndarray:
        arr: np.ndarray = np.minimum(self.collected_k(devices, round_), self.capacity)
        return arr

    def test_counts(self, devices: np.ndarray) -> np.ndarray:
        arr: np.ndarray = self.n_test_k[np.asarray(devices, dtype=np.int64)].astype(np.int64)
        return arr

    def cache_indices(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, int]:
        """Ring-buffer caches [K, width] as flat pool indices (slot order; slots past a device's count repeat
        its slot 0 and are ignored by the trainer's per-device counts) and the width."""
        d = np.asarray(devices, dtype=np.int64)
        t = self.collected_k(d, round_)[:, None]
        width = int(min(t.max(initial=1), self.capacity))
        slot = np.arange(width, dtype=np.int64)[None, :]
        slot = np.where(slot < np.minimum(t, self.capacity), slot, 0)
        j = slot + self.capacity * ((t - 1 - slot) // self.capacity)  # newest stream example in the slot
        n0, tr = self.n_init[d][:, None], self.n_train[d][:, None]
        arrived = np.where(j < n0, 0, -(-((j - n0 + 1) * self.rounds) // np.maximum(tr - n0, 1)))
        seg = self.segment_of_round(arrived)
        v = np.asarray(self.variant)[seg, d[:, None]].astype(np.int64)
        return v * self.n_examples + self.stream[d[:, None], j], width

    def slot_rounds(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cache slot [K, width]: stream example number, round it arrived in, first example of that round."""
        d = np.asarray(devices, dtype=np.int64)
        t = self.collected_k(d, round_)[:, None]
        width = int(min(t.max(initial=1), self.capacity))
        slot = np.arange(width, dtype=np.int64)[None, :]
        slot = np.where(slot < np.minimum(t, self.capacity), slot, 0)
        j = slot + self.capacity * ((t - 1 - slot) // self.capacity)
        n0, tr = self.n_init[d][:, None], self.n_train[d][:, None]
        r = np.where(j < n0, 0, -(-((j - n0 + 1) * self.rounds) // np.maximum(tr - n0, 1)))
        start = np.where(r == 0, 0, n0 + ((tr - n0) * np.maximum(r - 1, 0)) // self.rounds)
        return j, r, start

    def has_unlabelled(self) -> bool:
        """Whether a training stream holds an example without a label (the recordings' -1)."""
        rows = self.stream[self.stream >= 0]
        return bool((self.labels[rows] < 0).any())

    def has_class(self, devices: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether stream example ``j`` [M] of each device has a label [K, M] (recordings may lack some)."""
        d = np.asarray(devices, dtype=np.int64)[:, None]
        jj = np.clip(np.asarray(j, dtype=np.int64)[None, :], 0, self.stream.shape[1] - 1)
        out: np.ndarray = self.labels[self.stream[d, jj]] >= 0
        return out

    def test_indices(self, devices: np.ndarray, segment: int) -> np.ndarray:
        d = np.asarray(devices, dtype=np.int64)
        v = np.asarray(self.variant)[segment, d].astype(np.int64)
        arr: np.ndarray = v[:, None] * self.n_examples + self.test[d]
        return arr


def open_fleet_data(fleet_dir: str | Path) -> FleetData:
    """The read side that matches how the fleet was written (generated or recorded)."""
    meta = json.loads((Path(fleet_dir) / "layout.json").read_text())
    return RecordedFleetData(fleet_dir) if meta.get("kind") == "recorded" else FleetData(fleet_dir)


__all__ = ["DeviceStreams", "RecordedFleetData", "device_streams", "open_fleet_data", "write_recorded_fleet"]
