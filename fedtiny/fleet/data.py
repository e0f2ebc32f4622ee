"""Per-device data of a simulated fleet, at scale: a shared pool of int8 features plus per-device indices.

Generating data and running the int8 backbone per device does not scale to 100,000 devices. Instead:

* The fleet's conditions are quantized: the per-device spread becomes ``fleet.variants`` condition variants,
  and drift events map variants to new ones. Every distinct condition gets a **pool**: ``pool_per_class``
  examples of every class (the first three quarters for training samples, the last quarter for test
  samples), generated once and featurized once with the real int8 model (TFLite Micro by
  default: device-faithful; LiteRT with BUILTIN_REF kernels optionally: ±1 LSB on about 0.03% of features,
  measured against TFLite Micro). Pools are cached on disk by (model, task, condition), so a drift event only
  computes the pools of the conditions it creates: samples whose input did not change are never recomputed.
* A device is its Dirichlet class mix (per segment: label shift and new classes change it), its condition
  variant (per segment) and counter-based hashes of (seed, device, sample number) that pick a class and a
  pool example for every sample it collects. Nothing per device is stored beyond a few small arrays.
* A device collects ``samples_per_device`` samples before round 1 and ``new_samples_per_round`` per round
  after; its cache is a ring buffer (``fedtiny.ondevice.FeatureCache`` semantics): slot ``j % capacity`` holds
  sample ``j``, so after a drift event drifted samples replace the oldest ones round by round.

Ray workers memory-map the ``.npy`` files (no TensorFlow, no interpreter in the workers) and gather features
by index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.config.schema import DriftEvent, LabelsSection
from fedtiny.fleet.draw import draw_rows
from fedtiny.fleet.drift import Hit, Segment, drift_kind
from fedtiny.fleet.layout import FleetLayout
from fedtiny.fleet.spec import FleetSpec
from fedtiny.ondevice.head import Int8Head, predict_through
from fedtiny.ondevice.shuffle import mix64
from fedtiny.ondevice.tail import HeadTail

FLEET_DIR = "fleet"
__all__ = ["FLEET_DIR", "FleetData", "FleetLayout", "FleetPlan", "build_plan", "prepare_fleet", "uniform"]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def uniform(seed: int, tag: int, a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Counter-based uniform [0, 1) keyed by (seed, tag, a, b); broadcasts a and b. Order-independent."""
    with np.errstate(over="ignore"):
        k = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ (np.uint64(tag) * _GOLDEN))
        z = mix64(mix64(k ^ np.asarray(a, dtype=np.uint64)) ^ np.asarray(b, dtype=np.uint64))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _cond_key(c: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, round(float(v), 9)) for k, v in c.items()))


@dataclass
class FleetPlan:
    """Everything per device, as small arrays (numpy only)."""

    conditions: list[dict[str, float]]  # distinct conditions (pool index)
    variant: np.ndarray  # int32 [S, K]: condition of each device in each segment
    cmix: np.ndarray  # float32 [S, K, C]: cumulative class mix of each device in each segment
    group: np.ndarray  # int16 [K]
    board: np.ndarray  # int8 [K] index into boards
    boards: list[str]
    faulty: np.ndarray  # bool [K]
    speed: np.ndarray  # float32 [K] compute-speed factor (1 = datasheet)


def build_plan(
    s: FleetSpec,
    layout: FleetLayout,
    default_condition: dict[str, float] | None = None,
    num_classes: int | None = None,
) -> FleetPlan:
    """Conditions, class mixes, groups, boards and faults of every device, from the scenario seed. What an
    event changes is its kind's (:data:`fedtiny.fleet.drift.DRIFT_KINDS`).

    ``default_condition``/``num_classes`` describe the data when it is not the scenario's task (recordings).
    """
    if default_condition is None or num_classes is None:
        default_condition, num_classes = s.task.default_condition(), s.task.num_classes
    k, c, f = s.fleet.devices, num_classes, s.fleet
    rng = np.random.default_rng([s.seed, 0xF1EE7])
    base = {**default_condition, **f.condition}
    nvar = min(f.variants, k) if f.spread else 1
    offsets = {
        knob: rng.permutation(-sp + 2 * sp * (np.arange(nvar) + 0.5) / nvar) for knob, sp in f.spread.items()
    }
    conds: list[dict[str, float]] = []
    index: dict[tuple[tuple[str, float], ...], int] = {}

    def intern(cond: dict[str, float]) -> int:
        key = _cond_key(cond)
        if key not in index:
            index[key] = len(conds)
            conds.append(dict(cond))
        return index[key]

    base_ids = np.array(
        [
            intern({**base, **{kn: base[kn] + float(off[v]) for kn, off in offsets.items()}})
            for v in range(nvar)
        ]
    )
    var0 = base_ids[rng.integers(0, nvar, k)].astype(np.int32)
    mix0 = rng.dirichlet(np.full(c, f.dirichlet_alpha), size=k)
    group = np.zeros(k, dtype=np.int16)
    hits = []
    for e in s.drift:
        gi = layout.groups.index(e.group)  # 0 = "fleet"
        if e.target:  # every device of the target group (the loader makes group = target)
            hit = np.nonzero(group == layout.groups.index(e.target))[0]
        else:  # exclusive draws: round(fraction x devices) of the devices in no other named group
            free = np.nonzero((group == 0) | (group == gi))[0]
            hit = np.sort(free[rng.permutation(len(free))[: min(int(round(e.fraction * k)), len(free))]])
        hits.append(hit)
        group[hit] = gi
    # the state every segment starts from, before any event (e.g. new classes absent from their devices)
    events = [Hit(e, i, hit, s.seed, c) for i, (e, hit) in enumerate(zip(s.drift, hits))]
    start0 = Segment(conds, intern, var0, mix0, np.ones((k, c), dtype=bool))
    for h in events:
        drift_kind(h.event).before(h, start0)
    nseg = len(layout.segment_starts)
    variant = np.zeros((nseg, k), dtype=np.int32)
    cmix = np.zeros((nseg, k, c), dtype=np.float32)
    for si, start in enumerate(layout.segment_starts):
        seg = Segment(conds, intern, start0.variant.copy(), start0.mix.copy(), start0.present.copy())
        for h in events:
            if h.event.at <= start:
                drift_kind(h.event).apply(h, seg)
        var, mix, present = seg.variant, seg.mix, seg.present
        m = mix * present
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
        variant[si] = var
        cmix[si] = np.cumsum(m, axis=1).astype(np.float32)
        cmix[si, :, -1] = 1.0 + 1e-6  # every u < 1 falls into some class
    boards = list(f.boards) or [f.board]
    fracs = np.array(list(f.boards.values()) or [1.0])
    counts = np.floor(fracs * k).astype(int)
    counts[0] += k - counts.sum()
    board = rng.permutation(np.repeat(np.arange(len(boards)), counts)).astype(np.int8)
    faulty = np.zeros(k, dtype=bool)
    faulty[rng.permutation(k)[: int(round(f.faulty_fraction * k))]] = True
    speed = (
        np.exp(rng.normal(0.0, f.speed_jitter, k)).astype(np.float32)
        if f.speed_jitter
        else np.ones(k, dtype=np.float32)
    )
    return FleetPlan(conds, variant, cmix, group, board, boards, faulty, speed)


#: bumped when the data a task generates changes for the same seed (2: fedtiny.exactmath, the same bits on every CPU)
POOL_VERSION = 2


def _pool_cache_dir(tflite: bytes, s: FleetSpec, featurizer: str) -> Path:
    from fedtiny.model.build import cache_root

    key = hashlib.sha256(
        tflite + json.dumps([s.model.task, s.model.task_params, featurizer, s.seed, POOL_VERSION]).encode()
    ).hexdigest()[:20]
    return cache_root() / "pools" / key


def make_pool(
    s: FleetSpec,
    cond: dict[str, float],
    featurize: Callable[[np.ndarray], np.ndarray],
    per_class: int,
    num_classes: int,
) -> np.ndarray:
    """int8 [C, P, D]: ``per_class`` examples of every class under ``cond``, featurized by the int8 model."""
    task = s.task
    ckey = hashlib.sha256(repr(_cond_key(cond)).encode()).digest()
    rng = np.random.default_rng([s.seed, 0xB001, int.from_bytes(ckey[:8], "little")])
    labels = np.repeat(np.arange(num_classes), per_class)
    out = []
    for i in range(0, len(labels), 512):
        out.append(featurize(task.generate(labels[i : i + 512], rng, cond)))
    f = np.concatenate(out)
    return f.reshape(num_classes, per_class, -1)


def prepare_fleet(
    s: FleetSpec,
    tflite: bytes,
    out_dir: Path,
    featurize: Callable[[np.ndarray], np.ndarray] | None = None,
    log: Callable[[str], object] = print,
    tail: HeadTail | None = None,
    per_tensor: bool = False,
) -> FleetLayout:
    """Fleet plan and shared feature pools under ``out_dir/fleet`` (pools reused from the disk cache).

    ``tail`` are the model's ops after the head and ``per_tensor`` whether its head
    keeps one weight scale: what boards predict through and how the server re-quantizes.
    """
    from fedtiny.model.build import factory_data
    from fedtiny.model.runtime import Int8Runner

    if featurize is None:
        featurize = Int8Runner(tflite, s.fleet.featurizer).features  # type: ignore[arg-type]  # schema: a choice
    task = s.task
    layout = s.layout
    root = out_dir / FLEET_DIR
    root.mkdir(parents=True, exist_ok=True)
    plan = build_plan(s, layout)
    cache = _pool_cache_dir(tflite, s, s.fleet.featurizer)
    cache.mkdir(parents=True, exist_ok=True)
    pools = []
    computed = 0
    for cond in plan.conditions:
        name = (
            hashlib.sha256(repr((_cond_key(cond), s.fleet.pool_per_class)).encode()).hexdigest()[:20] + ".npy"
        )
        if (cache / name).exists():
            pools.append(np.load(cache / name))
            continue
        p = make_pool(s, cond, featurize, s.fleet.pool_per_class, task.num_classes)
        tmp = (
            cache / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp.npy"
        )  # concurrent runs: no shared temp
        np.save(tmp, p)
        tmp.replace(cache / name)
        pools.append(p)
        computed += 1
    np.save(root / "pool_feats.npy", np.stack(pools))
    np.save(
        root / "pool_labels.npy",
        np.repeat(np.arange(task.num_classes), s.fleet.pool_per_class).astype(np.int16),
    )
    log(
        f"fleet: {s.fleet.devices} devices, {len(plan.conditions)} condition variants x {task.num_classes} classes x "
        f"{s.fleet.pool_per_class} pooled samples ({computed} pools computed, {len(pools) - computed} from cache)"
    )
    np.save(root / "variant.npy", plan.variant)
    np.save(root / "cmix.npy", plan.cmix)
    np.save(root / "group.npy", plan.group)
    np.save(root / "board.npy", plan.board)
    np.save(root / "faulty.npy", plan.faulty)
    np.save(root / "speed.npy", plan.speed)
    spec = s.model
    xt, yt = factory_data(spec, spec.test_samples, 1)
    np.save(root / "global_test_feats.npy", featurize(xt))
    np.save(root / "global_test_labels.npy", yt.astype(np.int16))
    xc, _ = factory_data(spec, min(300, spec.factory_samples), 0)
    np.save(root / "calib_feats.npy", featurize(xc))
    meta = {
        "train": s.fleet.samples_per_device,
        "test": s.eval.test_samples or s.fleet.test_samples_per_device,
        "cache": s.fleet.cache_size,
        "new_per_round": s.fleet.new_samples_per_round,
        "seed": s.seed,
        "fault": s.fleet.fault,
        "test_mix": s.eval.test_mix,
        "conditions": plan.conditions,
        "boards": plan.boards,
        "kind": "generated",
        "tail": tail.to_list() if tail is not None else [],
        "per_tensor": per_tensor,
        **layout.__dict__,
    }
    (root / "layout.json").write_text(json.dumps(meta, indent=1))
    write_labels(root, s.labels, s.drift, layout.groups)
    return layout


#: the file in a fleet directory that holds its [labels] section (absent: every sample labelled at once)
LABELS_FILE = "labels.json"


def write_labels(
    fleet_dir: Path, labels: LabelsSection, drift: Sequence[DriftEvent] = (), groups: Sequence[str] = ()
) -> None:
    """Record the labels the fleet's devices get next to its data (fedtiny/fleet/labels.py reads them): the
    section, and the drift events that change them (with their group's index in ``groups``; -1: the whole
    fleet); no file when every sample is labelled at once."""
    path = fleet_dir / LABELS_FILE
    events = [
        {
            "at": e.at,
            "group": groups.index(e.group) if e.group in groups[1:] else -1,
            "values": dict(e.labels),
        }
        for e in drift
        if e.labels
    ]
    if labels.all_labelled and not events:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps({"labels": dataclasses.asdict(labels), "events": events}, indent=1))


class FleetData:
    """Read side (gateways and server): memory-mapped pools and plan; per-device samples gathered by index.

    The pool holds every example under every condition variant: flat index ``v * n_examples + i`` is example
    ``i`` under variant ``v``, and ``labels[i]`` its class. Generated fleets draw each device's samples from
    the pool by counter-based hashes (below); recorded fleets (fedtiny/fleet/recorded.py) list them.
    """

    def __init__(self, fleet_dir: str | Path) -> None:
        self.root = Path(fleet_dir)
        meta = json.loads((self.root / "layout.json").read_text())
        self.meta = meta
        self.n_initial, self.n_test = int(meta["train"]), int(meta["test"])
        self.capacity, self.per_round = int(meta["cache"]), int(meta["new_per_round"])
        self.seed = int(meta["seed"])
        self.starts = np.asarray(meta["segment_starts"], dtype=np.int64)
        self.pool = np.load(self.root / "pool_feats.npy", mmap_mode="r")  # [V, C, P, D] or [V, N, D]
        self.variant = np.load(self.root / "variant.npy", mmap_mode="r")
        self.faulty = np.load(self.root / "faulty.npy", mmap_mode="r")
        self.board = np.load(self.root / "board.npy", mmap_mode="r")  # index into meta["boards"]
        self.num_variants, self.dim = self.pool.shape[0], self.pool.shape[-1]
        self.pool2d = self.pool.reshape(-1, self.dim)
        self.n_examples = self.pool2d.shape[0] // self.num_variants
        self.labels = np.load(self.root / "pool_labels.npy").astype(
            np.int64
        )  # [n_examples]; -1: never a class
        self.tail = HeadTail.from_list(meta.get("tail", []))
        self.balanced_test = meta.get("test_mix", "local") == "balanced"
        if self.pool.ndim == 4:  # a generated pool: per (variant, class), pool_size examples
            self.num_classes, self.pool_size = self.pool.shape[1], self.pool.shape[2]
            self.cmix = np.load(self.root / "cmix.npy", mmap_mode="r")
            self.pool_train = self.pool_size - max(1, self.pool_size // 4) if self.pool_size > 1 else 1

    @property
    def flat_labels(self) -> np.ndarray:
        """Label of every pool row [V * n_examples] (``labels`` repeated per variant; -1: never a class), int16
        when the classes fit: what the pooled trainer reads per visited slot."""
        if not hasattr(self, "_flat_labels"):
            lab = self.labels
            small = lab.size == 0 or (lab.min() >= -(2**15) and lab.max() < 2**15)
            self._flat_labels = np.tile(lab.astype(np.int16) if small else lab, self.num_variants)
        return self._flat_labels

    def cache_counts(self, devices: np.ndarray, round_: int) -> np.ndarray:
        """Samples in each device's cache when it trains in ``round_`` [K]."""
        return np.full(len(devices), min(self.collected(round_), self.capacity), dtype=np.int64)

    def test_counts(self, devices: np.ndarray) -> np.ndarray:
        """Local test samples of each device [K] (the rest of its test row is padding that is never correct)."""
        return np.full(len(devices), self.n_test, dtype=np.int64)

    def predict(self, head: Int8Head, feats: np.ndarray) -> np.ndarray:
        """What a board predicts: argmax of the model's output (the head, then the ops after it)."""
        return predict_through(head, self.tail, feats)

    def segment_of_round(self, r: np.ndarray | int) -> np.ndarray:
        return np.searchsorted(self.starts, np.asarray(r), side="right") - 1

    def collected(self, round_: int) -> int:
        """Samples each device has collected when it trains in ``round_`` (round 0: the initial ones)."""
        return self.n_initial + max(round_, 0) * self.per_round

    def _draw(
        self, devices: np.ndarray, j: np.ndarray, seg: np.ndarray, tag: int, test: bool = False
    ) -> np.ndarray:
        """Flat pool indices [K, n] of samples number ``j`` [n] (segment ``seg`` [n]) of ``devices`` [K]: int32
        from the compiled draw (fedtiny/fleet/draw.py, the same rows), int64 from the numpy one below."""
        lo, hi = (self.pool_train, self.pool_size) if test else (0, self.pool_train)
        fast = draw_rows(
            self.seed,
            tag,
            devices,
            j,
            seg,
            self.cmix,
            self.variant,
            lo,
            hi,
            self.pool_size,
            test and self.balanced_test,
            self.pool2d.shape[0],
        )
        if fast is not None:
            return fast
        return self._draw_numpy(devices, j, seg, tag, test)

    def _draw_numpy(
        self, devices: np.ndarray, j: np.ndarray, seg: np.ndarray, tag: int, test: bool = False
    ) -> np.ndarray:
        """The readable reference of :meth:`_draw` (numpy, int64)."""
        d = np.asarray(devices, dtype=np.int64)[:, None]
        u = uniform(self.seed, tag, d, j[None, :]).astype(np.float32)
        cm = self.cmix[seg[None, :], d]  # [K, n, C]
        cls = (u[..., None] >= cm).sum(axis=-1).clip(0, self.num_classes - 1)
        if test and self.balanced_test:  # every class equally often, under the device's own condition
            cls = np.broadcast_to(j[None, :] % self.num_classes, cls.shape)
        # the last quarter of every pool is held out for test samples: no device tests on a training example
        lo, hi = (self.pool_train, self.pool_size) if test else (0, self.pool_train)
        p = lo + (uniform(self.seed, tag + 1, d, j[None, :]) * (hi - lo)).astype(np.int64)
        v = self.variant[seg[None, :], d].astype(np.int64)
        arr: np.ndarray = (v * self.num_classes + cls) * self.pool_size + p
        return arr

    def slot_samples(self, round_: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample number ``j`` [count] in each ring-buffer slot when devices train in ``round_`` (the newest
        sample that landed in the slot; the same for every device) and the drift segment it was collected in."""
        t = self.collected(round_)
        slot = np.arange(min(t, self.capacity), dtype=np.int64)
        j = slot + self.capacity * ((t - 1 - slot) // self.capacity)
        r_j = np.where(j < self.n_initial, 0, 1 + (j - self.n_initial) // max(self.per_round, 1))
        return j, self.segment_of_round(r_j)

    def slot_rounds(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cache slot [K, N] (the columns of :meth:`cache_indices`): the sample number ``j``, the round it was
        collected in (0: the initial samples) and the number of the first sample collected in that round: what
        a device's labels depend on (fedtiny/fleet/labels.py)."""
        j, _ = self.slot_samples(round_)
        r = np.where(j < self.n_initial, 0, 1 + (j - self.n_initial) // max(self.per_round, 1))
        start = np.where(r == 0, 0, self.n_initial + (r - 1) * self.per_round)
        shape = (len(devices), len(j))
        return np.broadcast_to(j, shape), np.broadcast_to(r, shape), np.broadcast_to(start, shape)

    def has_unlabelled(self) -> bool:
        """Whether some device collects examples without a label (generated fleets: never)."""
        return False

    def has_class(self, devices: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether training sample number ``j`` [M] of each device has a true class [K, M] (generated: all)."""
        return np.ones((len(devices), len(j)), dtype=bool)

    def draw_cache_rows(self, devices: np.ndarray, j: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Flat pool indices [K, n] of training samples number ``j`` [n] (collected in segments ``seg``)."""
        return self._draw(devices, j, seg, 1)

    def cache_indices(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, int]:
        """Ring-buffer cache of each device in ``round_`` as flat pool indices [K, count] (slot order)."""
        j, seg = self.slot_samples(round_)
        return self.draw_cache_rows(devices, j, seg), len(j)

    def test_indices(self, devices: np.ndarray, segment: int) -> np.ndarray:
        """Local test samples [K, n_test] of each device under its segment-``segment`` condition and mix."""
        j = np.arange(self.n_test, dtype=np.int64)
        return self._draw(devices, j, np.full(self.n_test, segment, dtype=np.int64), 11, test=True)

    def gather(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 features [..., D] and labels [...] of flat pool indices."""
        feats = np.asarray(self.pool2d[flat.reshape(-1)]).reshape(*flat.shape, self.dim)
        return feats, self.labels[flat % self.n_examples]

    def train(self, devices: np.ndarray, round_: int) -> tuple[np.ndarray, np.ndarray]:
        idx, _ = self.cache_indices(devices, round_)
        return self.gather(idx)
