"""The labels a device really has: few, late, sometimes wrong (docs/labels.md), and its own pseudo-labels.

Every decision is a counter-based hash of (seed, device, sample number), like the samples themselves, so a
device's labels do not depend on which gateway, worker or round order computed them, and the field trial
replays the very labels the simulation used. Device ``k``'s samples are numbered ``j = 0, 1, ...`` in the
order it collects them; sample ``j`` is first in the cache in round ``r(j)``.

- it comes with a label when its true class is known (recorded data may lack it: label -1) and
  ``u(LABEL, k, j) < fraction_k``;
- that label reaches the device in round ``r(j) + delay_rounds``; with ``budget_per_round = B``, of the labels
  of samples collected in the same round only the first ``B`` (by sample number) ever reach it;
- the label is wrong with probability ``noise_k`` (uniform over the other classes), or drawn from row ``y`` of
  ``noise_matrix``;
- in round ``t`` a cached sample is labelled when its label has reached the device (``r(j) + delay <= t``);
  the board pseudo-labels the others at TRAIN (docs/ondevice.md §5a) when ``pseudo`` is on.

``fraction_k`` and ``noise_k`` are the section's values plus a per-device uniform ``+/- spread``, clipped to
0..1. With every sample labelled at once (:attr:`LabelsSection.all_labelled`) nothing here runs: the
trainers see the caches exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.config.schema import LabelsSection
from fedtiny.fleet.data import LABELS_FILE, FleetData, uniform, write_labels
from fedtiny.ondevice import Int8Head
from fedtiny.ondevice.pseudo import pseudo_labels, pseudo_threshold

_TAG_LABEL, _TAG_NOISE, _TAG_WRONG, _TAG_SPREAD_F, _TAG_SPREAD_N = 0x1AB0, 0x1AB1, 0x1AB2, 0x1AB3, 0x1AB4

#: columns of :class:`LabelCounts` (rounds.csv, the device logs)
COUNT_NAMES = (
    "labels_used",
    "labels_late",
    "labels_wrong",
    "pseudo_used",
    "pseudo_checked",
    "pseudo_correct",
)


def read_labels(fleet_dir: Path) -> tuple[LabelsSection, list[LabelEvent]] | None:
    """The fleet's label section and the drift events that change it (written by the fleet stage); None when
    every sample is labelled."""
    path = fleet_dir / LABELS_FILE
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    events = [LabelEvent(int(e["at"]), int(e["group"]), dict(e["values"])) for e in doc.get("events", [])]
    return LabelsSection(**doc["labels"]), events


def fleet_schedule(data: FleetData, num_classes: int) -> LabelSchedule | None:
    """The label process of a fleet: its [labels] section; a recorded fleet with examples that lack a label
    has one even when the section asks for every label (those examples are used unlabelled); None: every
    sample labelled at once, the caches are trained on as they are."""
    doc = read_labels(data.root)
    if doc is None:
        return LabelSchedule(LabelsSection(), data.seed, num_classes) if data.has_unlabelled() else None
    sec, events = doc
    group = np.load(data.root / "group.npy", mmap_mode="r") if events else None
    return LabelSchedule(sec, data.seed, num_classes, events, group)


@dataclass(frozen=True)
class LabelCounts:
    """What the devices of one call trained on, summed (the simulation knows every true label)."""

    labels_used: int = 0  # slots trained on with a label the device was given
    labels_late: int = 0  # of those, labels that reached the device after their sample (delay_rounds > 0)
    labels_wrong: int = 0  # of those, wrong labels (noise)
    pseudo_used: int = 0  # slots trained on with the board's own label
    pseudo_checked: int = 0  # of those, samples whose true class is known
    pseudo_correct: int = 0  # of those, right

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in COUNT_NAMES], dtype=np.int64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> LabelCounts:
        return cls(*(int(v) for v in np.asarray(a, dtype=np.int64).reshape(-1)[: len(COUNT_NAMES)]))


#: what a drift event may change of the labels its devices get from its round on
EVENT_KEYS = ("fraction", "delay_rounds", "noise", "budget_per_round")


@dataclass(frozen=True)
class LabelEvent:
    """From round ``at`` on, the samples that the devices of group ``group`` (-1: every device) collect get
    the label settings ``values`` (keys of :data:`EVENT_KEYS`) instead of the section's."""

    at: int
    group: int
    values: dict[str, float]


class LabelSchedule:
    """The label process of one fleet (the module docstring), vectorized over devices and cache slots.

    ``events`` and ``device_group`` (the group index of every device, ``group.npy``) give the settings that
    drift events change; a sample's settings are those in force for its device in the round it was collected.
    """

    def __init__(
        self,
        section: LabelsSection,
        seed: int,
        num_classes: int,
        events: Sequence[LabelEvent] = (),
        device_group: np.ndarray | None = None,
    ) -> None:
        self.section, self.seed, self.num_classes = section, int(seed), int(num_classes)
        m = np.asarray(section.noise_matrix, dtype=np.float64)
        self.cum = np.cumsum(m, axis=1) if m.size else None
        self.threshold = pseudo_threshold(section.pseudo, num_classes) if section.pseudo > 0 else None
        self.events = sorted(events, key=lambda e: e.at)
        self.device_group = device_group

    def value(self, name: str, devices: np.ndarray, r: np.ndarray | None) -> np.ndarray:
        """Setting ``name`` for each device's samples collected in rounds ``r`` [K, N] ([K, 1] without events)."""
        d = np.asarray(devices, dtype=np.int64)
        out = np.full((len(d), 1), float(getattr(self.section, name)))
        todo = [e for e in self.events if name in e.values]
        if not todo or r is None:
            return out
        out = np.broadcast_to(out, np.shape(r)).copy()
        for e in todo:
            mine = np.ones(len(d), dtype=bool) if e.group < 0 else self._in_group(d, e.group)
            out[mine[:, None] & (np.asarray(r) >= e.at)] = float(e.values[name])
        return out

    def _in_group(self, d: np.ndarray, group: int) -> np.ndarray:
        assert self.device_group is not None
        out: np.ndarray = np.asarray(self.device_group)[d] == group
        return out

    def knob(self, devices: np.ndarray, base: float | np.ndarray, name: str, tag: int) -> np.ndarray:
        """``base`` plus the device's uniform +/- spread of ``name``, clipped to 0..1 ([K] or as ``base``)."""
        sp = float(self.section.spread.get(name, 0.0))
        d = np.asarray(devices, dtype=np.int64)
        if sp == 0.0:
            return np.broadcast_to(np.asarray(base, dtype=np.float64), np.shape(base) or (len(d),))
        off = sp * (2.0 * uniform(self.seed, tag, d, 0) - 1.0)
        if np.ndim(base) == 2:
            off = off[:, None]
        arr: np.ndarray = np.clip(base + off, 0.0, 1.0)
        return arr

    def has_label(
        self, devices: np.ndarray, j: np.ndarray, y: np.ndarray, r: np.ndarray | None = None
    ) -> np.ndarray:
        """Whether sample ``j`` [K, N] (collected in round ``r``) of each device comes with a label at all
        (before the budget)."""
        f = self.knob(devices, self.value("fraction", devices, r), "fraction", _TAG_SPREAD_F)
        d = np.asarray(devices, dtype=np.int64)[:, None]
        out: np.ndarray = (np.asarray(y) >= 0) & (uniform(self.seed, _TAG_LABEL, d, j) < f)
        return out

    def delay(self, devices: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Rounds between a sample (collected in round ``r``) and its label, [K, N]."""
        out: np.ndarray = self.value("delay_rounds", devices, r).astype(np.int64)
        return out

    def observed(
        self, devices: np.ndarray, j: np.ndarray, y: np.ndarray, r: np.ndarray | None = None
    ) -> np.ndarray:
        """The label a device is given for sample ``j`` of true class ``y`` (noise applied), [K, N]."""
        d = np.asarray(devices, dtype=np.int64)[:, None]
        y = np.asarray(y, dtype=np.int64)
        u = uniform(self.seed, _TAG_NOISE, d, j)
        c = self.num_classes
        if self.cum is not None:
            rows = self.cum[np.clip(y, 0, c - 1)]  # [K, N, C]
            drawn = (u[..., None] >= rows).sum(axis=-1).clip(0, c - 1)
            out: np.ndarray = np.where(y >= 0, drawn, y)
            return out
        noise = self.knob(devices, self.value("noise", devices, r), "noise", _TAG_SPREAD_N)
        if c < 2 or not (noise > 0).any():
            return y
        shift = 1 + np.minimum((uniform(self.seed, _TAG_WRONG, d, j) * (c - 1)).astype(np.int64), c - 2)
        out = np.where((u < noise) & (y >= 0), (y + shift) % c, y)
        return out

    def has_budget(self) -> bool:
        return self.section.budget_per_round > 0 or any("budget_per_round" in e.values for e in self.events)

    def delivered(
        self, devices: np.ndarray, j: np.ndarray, r: np.ndarray, start: np.ndarray, data: FleetData
    ) -> np.ndarray:
        """Whether the label of sample ``j`` [K, N] (collected in round ``r``, whose first sample is ``start``) is
        within that round's budget: the first ``budget_per_round`` labelled samples from ``start``."""
        j, r, start = (np.asarray(a, dtype=np.int64) for a in (j, r, start))
        budget = self.value("budget_per_round", devices, r)
        out = np.ones(j.shape, dtype=bool)
        if not (budget > 0).any():
            return out
        k = len(devices)
        rows = np.arange(k)[:, None]
        for rr in np.unique(r):  # the samples of one collection round share its settings
            at = r == rr
            lo = int(start[at].min())
            span = np.arange(lo, int(j[at].max()) + 1, dtype=np.int64)
            known = data.has_class(devices, span)  # recorded data may lack labels
            labelled = self.has_label(
                devices,
                np.broadcast_to(span, (k, len(span))),
                np.where(known, 0, -1),
                np.full((k, len(span)), rr, dtype=np.int64),
            )
            cs = np.concatenate([np.zeros((k, 1), dtype=np.int64), np.cumsum(labelled, axis=1)], axis=1)
            jj, ss = np.where(at, j, lo), np.where(at, start, lo)
            rank = cs[rows, jj - lo] - cs[rows, ss - lo]
            b = np.broadcast_to(budget, j.shape)
            out &= ~at | (b <= 0) | (rank < b)
        return out


@dataclass
class LabelView:
    """One call's training sets: each device's kept slots first (slot order), their labels and weights."""

    idx: np.ndarray  # [K, N] pool rows, kept slots first
    labels: np.ndarray  # int64 [K, N]
    weights: np.ndarray | None  # float32 [K, N]; None: no pseudo-label (every weight 1)
    counts: np.ndarray  # int64 [K]: kept slots
    tally: LabelCounts
    per_device: np.ndarray  # int32 [K, 2]: each device's given labels and pseudo-labels trained on


def given_labels(
    schedule: LabelSchedule,
    data: FleetData,
    devices: np.ndarray,
    round_: int,
    idx: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The label each device holds in each cache slot in ``round_`` (slot order, [K, N], -1: none yet or never,
    as a board's cache would hold it), the true classes [K, N] (-1: unknown) and which labels came late."""
    devs = np.asarray(devices, dtype=np.int64)
    n = idx.shape[1]
    j, r, start = (np.asarray(a)[:, :n] for a in data.slot_rounds(devs, round_))
    y = np.asarray(data.labels)[np.asarray(idx, dtype=np.int64) % data.n_examples]
    valid = np.arange(n)[None, :] < np.asarray(counts)[:, None]
    delay = np.broadcast_to(schedule.delay(devs, r), r.shape)
    has = schedule.has_label(devs, j, y, r) & valid & (r + delay <= round_)
    if schedule.has_budget() and has.any():
        has &= schedule.delivered(devs, j, r, start, data)
    return np.where(has, schedule.observed(devs, j, y, r), -1), y, has & (delay > 0)


def label_view(
    schedule: LabelSchedule,
    data: FleetData,
    devices: np.ndarray,
    round_: int,
    idx: np.ndarray,
    counts: np.ndarray,
    head: Int8Head,
) -> LabelView:
    """What each device of ``devices`` trains on in ``round_``: its cache ``idx`` [K, N] (pool rows, slot order)
    and ``counts`` [K], cut down to the labelled slots and, with pseudo-labels, the slots ``head`` (the int8
    head the device holds) is confident about (docs/ondevice.md §5a)."""
    k, n = idx.shape
    obs, y, late = given_labels(schedule, data, devices, round_, idx, counts)
    has = obs >= 0
    valid = np.arange(n)[None, :] < np.asarray(counts)[:, None]
    lab = obs.copy()
    pseudo = np.zeros((k, n), dtype=bool)
    if schedule.threshold is not None:
        miss = np.argwhere(valid & ~has)
        for lo in range(0, len(miss), 1 << 18):
            part = miss[lo : lo + (1 << 18)]
            feats = np.asarray(data.pool2d[idx[part[:, 0], part[:, 1]]])
            cls, ok = pseudo_labels(head, feats, schedule.threshold)
            lab[part[ok, 0], part[ok, 1]] = cls[ok]
            pseudo[part[ok, 0], part[ok, 1]] = True
    keep = has | pseudo
    order = np.argsort(~keep, axis=1, kind="stable")  # kept slots first, in slot order
    weights = None
    if pseudo.any():
        w = np.where(pseudo, np.float32(schedule.section.pseudo_weight), np.float32(1.0)).astype(np.float32)
        weights = np.take_along_axis(w, order, axis=1)
    checked = pseudo & (y >= 0)
    used = int(has.sum())
    tally = LabelCounts(
        labels_used=used,
        labels_late=int(late.sum()),
        labels_wrong=int((has & (obs != y)).sum()),
        pseudo_used=int(pseudo.sum()),
        pseudo_checked=int(checked.sum()),
        pseudo_correct=int((checked & (lab == y)).sum()),
    )
    return LabelView(
        np.take_along_axis(np.asarray(idx), order, axis=1),
        np.take_along_axis(lab, order, axis=1),
        weights,
        keep.sum(axis=1).astype(np.int64),
        tally,
        np.stack([has.sum(axis=1), pseudo.sum(axis=1)], axis=1).astype(np.int32),
    )


__all__ = [
    "COUNT_NAMES",
    "EVENT_KEYS",
    "LabelEvent",
    "LABELS_FILE",
    "LabelCounts",
    "LabelSchedule",
    "LabelView",
    "fleet_schedule",
    "given_labels",
    "label_view",
    "read_labels",
    "write_labels",
]
