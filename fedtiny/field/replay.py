"""Data for a field trial, written by `fedtiny serve` into the trial directory.

Base model, calibration and golden features, the clean factory test set, and (for replay trials with virtual
boards) each board's recorded int8 features per drift segment, keyed by the board's device id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.config import Scenario, scenario_to_toml
from fedtiny.errors import ScenarioError
from fedtiny.fleet import drift as drift_kinds
from fedtiny.fleet.data import LABELS_FILE
from fedtiny.fleet.partition import dirichlet_labels
from fedtiny.plan.resolve import fleet_spec, layout_of, model_spec
from fedtiny.tasks import get_task

Log = Callable[[str], Any]

PREPARED_FILES = (
    "scenario.resolved.toml",
    "base_int8.tflite",
    "global_test_feats.npy",
    "global_test_labels.npy",
    "calib_feats.npy",
    "replay",
)


def segment_starts(s: Scenario) -> list[int]:
    return layout_of(s).segment_starts


def segment_of_round(s: Scenario, r: int) -> int:
    return layout_of(s).segment_of_round(r)


def check_replayable(s: Scenario, src: str = "scenario") -> None:
    """Replay data covers the replayable drift kinds (fedtiny.fleet.drift: condition) on random fractions;
    refuse what it would silently ignore."""
    for i, e in enumerate(s.drift):
        if (
            e.kind not in drift_kinds.DRIFT_KINDS
            or not drift_kinds.DRIFT_KINDS[e.kind].replayable
            or e.target
        ):
            kinds = " or ".join(f'kind = "{n}"' for n in drift_kinds.kind_names(lambda k: k.replayable))
            raise ScenarioError(
                f"{src}: 'drift[{i}]': field-trial replay supports {kinds} on a "
                f"random fraction only (got kind = {e.kind!r}, target = {e.target!r})"
            )
    if s.fleet.spread:
        raise ScenarioError(f"{src}: 'fleet.spread' is not supported by field-trial replay; remove it")


def prepare_trial(s: Scenario, out: Path, log: Log = print, boards: int = 0) -> bytes:
    """Build (or reuse) the base model and write everything the ServerApp and replay gateways read. ``boards``
    (`fedtiny trial --boards`; 0: unknown): how many boards will replay recorded data (the first devices)."""
    from fedtiny.model.build import build_base_model, factory_data
    from fedtiny.model.runtime import Int8Runner

    check_replayable(s, s.name)
    out.mkdir(parents=True, exist_ok=True)
    model_key = _user_files_key(s) if s.data.path else model_spec(s).key()
    stamp = hashlib.sha256(f"{scenario_to_toml(s)}\n{model_key}".encode()).hexdigest()
    done = out / ".prepared"
    if done.exists() and done.read_text() == stamp and all((out / f).exists() for f in PREPARED_FILES):
        log(f"{out} is already prepared for this scenario; reusing it")
        return (out / "base_int8.tflite").read_bytes()
    done.unlink(missing_ok=True)
    if s.data.path:
        tflite = _prepare_user_trial(s, out, log, boards)
        write_replay_labels(s, out / "replay")
        done.write_text(stamp)
        return tflite
    (out / "scenario.resolved.toml").write_text(scenario_to_toml(s))
    base = build_base_model(model_spec(s), log)
    tmp = out / "base_int8.tflite.tmp"
    tmp.write_bytes(base.tflite)
    os.replace(tmp, out / "base_int8.tflite")  # a board waiting for the file never reads half of it
    runner = Int8Runner(base.tflite, "tflm")
    spec = model_spec(s)
    xt, yt = factory_data(spec, s.model.test_samples, 1)
    np.save(out / "global_test_feats.npy", runner.features(xt))
    np.save(out / "global_test_labels.npy", yt.astype(np.int16))
    xc, _ = factory_data(spec, min(300, s.model.factory_samples), 0)
    np.save(out / "calib_feats.npy", runner.features(xc))
    staging = out / "replay.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    write_replay(s, runner.features, staging)
    write_replay_labels(s, staging)
    shutil.rmtree(out / "replay", ignore_errors=True)
    os.replace(staging, out / "replay")  # a gateway waiting for it sees all of it or nothing
    done.write_text(stamp)
    return base.tflite


def write_replay(s: Scenario, featurize: Callable[[np.ndarray], np.ndarray], root: Path) -> None:
    """Per device id 1..N: train/test int8 features for every segment, under its condition."""
    task = get_task(s.task.name, **s.task.params)
    root.mkdir(parents=True, exist_ok=True)
    n, m, k = s.fleet.samples_per_device, s.fleet.test_samples_per_device, s.fleet.devices
    labels = dirichlet_labels(
        k, len(task.classes), n + m, s.fleet.dirichlet_alpha, np.random.default_rng([s.seed, 0x1AB])
    )
    hit_rng = np.random.default_rng([s.seed, 0xF1E1D])
    hits = [set(hit_rng.permutation(k)[: round(e.fraction * k)].tolist()) for e in s.drift]
    starts = segment_starts(s)
    for d in range(k):
        arrays: dict[str, np.ndarray] = {"segments": np.array(len(starts))}
        for seg, start in enumerate(starts):
            cond = {**task.default_condition(), **s.fleet.condition}
            for e, hit in zip(s.drift, hits):
                if e.at <= start and d in hit:
                    cond.update(e.condition)
            x = task.generate(labels[d], np.random.default_rng([s.seed, 0xDA7A, seg, d]), cond)
            f = featurize(x)
            arrays[f"train_feats_{seg}"], arrays[f"train_labels_{seg}"] = (
                f[:n],
                labels[d, :n].astype(np.int16),
            )
            arrays[f"test_feats_{seg}"], arrays[f"test_labels_{seg}"] = f[n:], labels[d, n:].astype(np.int16)
        np.savez(root / f"device_{d + 1}.npz", **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds


def write_replay_labels(s: Scenario, root: Path) -> None:
    """The labels the boards get (docs/labels.md "Field trials"): the scenario's [labels], its seed and the
    drift segments' first rounds, next to the replay data (no file: every sample labelled at once)."""
    path = root / LABELS_FILE
    if s.labels.all_labelled:
        path.unlink(missing_ok=True)
        return
    doc = {"labels": dataclasses.asdict(s.labels), "seed": s.seed, "segment_starts": list(segment_starts(s))}
    path.write_text(json.dumps(doc, indent=1))


def _user_files_key(s: Scenario) -> str:
    """What identifies a user's model and data on disk (size and modification time of every file)."""
    parts = []
    for p in (s.model.tflite, s.model.keras, s.data.path):
        if not p:
            continue
        files = sorted(Path(p).rglob("*")) if Path(p).is_dir() else [Path(p)]
        parts += [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _prepare_user_trial(s: Scenario, out: Path, log: Log, boards: int = 0) -> bytes:
    """A user's model and recordings: replay data per device of the data (board i replays the i-th device:
    its latest training examples and its test examples, per drift segment); ``boards`` (0: all) is only
    said."""
    from fedtiny.fleet.recorded import RecordedFleetData
    from fedtiny.fleet.user_data import load_user_model_and_data, prepare_user_fleet

    spec = fleet_spec(s)
    rec, um = load_user_model_and_data(spec, s.model, log)
    uf = prepare_user_fleet(spec, s.train, rec, um.tflite, out, log, um.float_predict)
    resolved = dataclasses.replace(s, fleet=uf.spec.fleet, eval=uf.spec.eval)  # the data's devices
    (out / "scenario.resolved.toml").write_text(scenario_to_toml(resolved))
    fleet = out / "fleet"
    for name in ("global_test_feats.npy", "global_test_labels.npy", "calib_feats.npy"):
        shutil.copyfile(fleet / name, out / name)
    data = RecordedFleetData(fleet)
    staging = out / "replay.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cap = uf.spec.fleet.cache_size
    segments = len(data.starts)
    for d in range(len(data.n_train)):
        arrays: dict[str, np.ndarray] = {"segments": np.array(segments)}
        stream = data.stream[d, : data.n_train[d]][-cap:]  # the latest examples a cache of that size holds
        test = data.test[d, : data.n_test_k[d]]
        for seg in range(segments):
            v = int(np.asarray(data.variant)[seg, d]) * data.n_examples
            arrays[f"train_feats_{seg}"], arrays[f"train_labels_{seg}"] = data.gather(v + stream)
            arrays[f"test_feats_{seg}"], arrays[f"test_labels_{seg}"] = data.gather(v + test)
        for key in list(arrays):
            if key.startswith(("train_labels", "test_labels")):
                arrays[key] = arrays[key].astype(np.int16)
        np.savez(staging / f"device_{d + 1}.npz", **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds
    shutil.rmtree(out / "replay", ignore_errors=True)
    os.replace(staging, out / "replay")
    tmp = out / "base_int8.tflite.tmp"
    tmp.write_bytes(um.tflite)
    os.replace(tmp, out / "base_int8.tflite")
    names, n = uf.device_names, min(boards, len(uf.device_names)) if boards > 0 else len(uf.device_names)
    who = (
        f"{n} boards replay the recordings of devices {', '.join(names[:n][:8])}" + (" ..." if n > 8 else "")
        if n > 1
        else f"1 board replays the recordings of device {names[0]}"
    )
    log(f"field trial: {who}" + (f" (the first {n} of the data's {len(names)})" if n < len(names) else ""))
    return um.tflite
