"""Per-device data of a simulated fleet, as int8 features computed once with the real int8 model.

The fleet's timeline is cut into segments at drift events. For each segment every device holds a local
training set and a local test set generated under its own condition (factory default, the fleet's field
condition, a per-device spread, and the drift events that hit it), with its own Dirichlet class mix. The
driver runs the int8 backbone (TFLite Micro: device-faithful) once per example and writes ``.npy`` files
that the gateways (Ray workers) memory-map: no TensorFlow or interpreter in the workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fedtiny.config.schema import Scenario
from fedtiny.fleet.partition import dirichlet_labels
from fedtiny.tasks import get_task

FLEET_DIR = "fleet"


@dataclass(frozen=True)
class FleetLayout:
    """Which devices exist, which gateway serves them, and which segment a round belongs to."""

    devices: int
    devices_per_gateway: int
    segment_starts: list[int]  # round at which each segment starts (segment 0 starts at round 0)
    groups: list[str]  # group names; device_group[k] indexes it

    @property
    def gateways(self) -> int:
        return -(-self.devices // self.devices_per_gateway)

    def gateway_devices(self, g: int) -> np.ndarray:
        return np.arange(g * self.devices_per_gateway, min((g + 1) * self.devices_per_gateway, self.devices))

    def segment_of_round(self, r: int) -> int:
        """Round r (1-based training rounds; 0 = initial evaluation) uses the data of this segment."""
        return max(i for i, start in enumerate(self.segment_starts) if start <= r)


def layout_of(s: Scenario) -> FleetLayout:
    starts = sorted({0, *(e.at for e in s.drift)})
    groups = ["fleet"] + [e.group for e in s.drift if e.group != "fleet"]
    return FleetLayout(s.fleet.devices, s.fleet.devices_per_gateway, starts, list(dict.fromkeys(groups)))


def device_conditions(s: Scenario, layout: FleetLayout) -> tuple[list[list[dict[str, float]]], np.ndarray]:
    """Condition of every device in every segment, and each device's group index (its latest drift event)."""
    task = get_task(s.task.name, **s.task.params)
    rng = np.random.default_rng([s.seed, 0xF1EE7])
    k = s.fleet.devices
    base = {**task.default_condition(), **s.fleet.condition}
    per_device = []
    for _ in range(k):
        cond = dict(base)
        for knob, spread in s.fleet.spread.items():
            cond[knob] = cond[knob] + float(rng.uniform(-spread, spread))
        per_device.append(cond)
    group = np.zeros(k, dtype=np.int64)
    hits = [rng.permutation(k)[: int(round(e.fraction * k))] for e in s.drift]
    out = []
    for start in layout.segment_starts:
        seg = [dict(c) for c in per_device]
        for e, hit in zip(s.drift, hits):
            if e.at <= start:
                for d in hit:
                    seg[d].update(e.condition)
                    group[d] = layout.groups.index(e.group) if e.group in layout.groups else 0
        out.append(seg)
    return out, group


def prepare_fleet(
    s: Scenario,
    tflite: bytes,
    out_dir: Path,
    featurize: Callable[[np.ndarray], np.ndarray] | None = None,
    log: Callable[[str], Any] = print,
) -> FleetLayout:
    """Generate every device's data, compute int8 features, write them under ``out_dir/fleet``."""
    from fedtiny.model.build import ModelSpec, factory_data
    from fedtiny.model.runtime import Int8Runner

    if featurize is None:
        featurize = Int8Runner(tflite, "tflm").features
    task = get_task(s.task.name, **s.task.params)
    layout = layout_of(s)
    conds, group = device_conditions(s, layout)
    root = out_dir / FLEET_DIR
    root.mkdir(parents=True, exist_ok=True)
    k, n, m = s.fleet.devices, s.fleet.samples_per_device, s.fleet.test_samples_per_device
    labels = dirichlet_labels(k, len(task.classes), n + m, s.fleet.dirichlet_alpha, np.random.default_rng([s.seed, 0x1AB]))
    for seg in range(len(layout.segment_starts)):
        feats = None
        for d in range(k):
            if seg > 0 and conds[seg][d] == conds[seg - 1][d]:
                continue  # unaffected by this segment's drift: keeps the same data
            rng = np.random.default_rng([s.seed, 0xDA7A, seg, d])
            if feats is None:
                feats = np.load(root / f"feats_{seg - 1}.npy") if seg > 0 else None
            x = task.generate(labels[d], rng, conds[seg][d])
            f = featurize(x)
            if feats is None:
                feats = np.zeros((k, n + m, f.shape[1]), dtype=np.int8)
            feats[d] = f
        assert feats is not None
        np.save(root / f"feats_{seg}.npy", feats)
        log(f"fleet: segment {seg} (from round {layout.segment_starts[seg]}) features ready for {k} devices")
    np.save(root / "labels.npy", labels.astype(np.int16))
    np.save(root / "group.npy", group)
    spec = model_spec_of(s)
    xt, yt = factory_data(spec, s.model.test_samples, 1)
    np.save(root / "global_test_feats.npy", featurize(xt))
    np.save(root / "global_test_labels.npy", yt.astype(np.int16))
    xc, _ = factory_data(spec, min(300, s.model.factory_samples), 0)
    np.save(root / "calib_feats.npy", featurize(xc))
    meta = {"train": n, "test": m, **layout.__dict__}
    (root / "layout.json").write_text(json.dumps(meta, indent=1))
    return layout


def model_spec_of(s: Scenario) -> Any:
    from fedtiny.model.build import ModelSpec

    m = s.model
    return ModelSpec(
        task=s.task.name, task_params=dict(s.task.params), seed=s.seed, factory_samples=m.factory_samples,
        test_samples=m.test_samples, epochs=m.epochs, batch_size=m.batch_size, learning_rate=m.learning_rate,
        head_inputs=m.head_inputs,
    )


class FleetData:
    """Read side used by gateways: memory-mapped features of one segment, split train/test per device."""

    def __init__(self, fleet_dir: str | Path) -> None:
        self.root = Path(fleet_dir)
        meta = json.loads((self.root / "layout.json").read_text())
        self.n_train, self.n_test = int(meta["train"]), int(meta["test"])
        self.labels = np.load(self.root / "labels.npy", mmap_mode="r")
        self._segments: dict[int, np.ndarray] = {}

    def _feats(self, seg: int) -> np.ndarray:
        if seg not in self._segments:
            self._segments[seg] = np.load(self.root / f"feats_{seg}.npy", mmap_mode="r")
        return self._segments[seg]

    def train(self, seg: int, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self._feats(seg)[devices, : self.n_train]), np.asarray(self.labels[devices, : self.n_train])

    def test(self, seg: int, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self._feats(seg)[devices, self.n_train :]), np.asarray(self.labels[devices, self.n_train :])
