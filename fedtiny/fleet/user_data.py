"""The fleet of a user's recordings and model: front end, device streams, featurized pools, reference sets.

Takes the typed parts of a scenario (``[data]``, ``[fleet]``, drift) plus the loaded recordings and the int8
model, and writes what the round loop reads (``fedtiny/fleet/recorded.py`` layout) — all in the driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.config.schema import DataSection, ModelSection, TrainSection
from fedtiny.data import Recordings, apply_condition, default_condition, make_front_end
from fedtiny.errors import DataError
from fedtiny.fleet.data import FLEET_DIR, FleetLayout
from fedtiny.fleet.recorded import device_streams, write_recorded_fleet
from fedtiny.fleet.spec import FleetSpec
from fedtiny.model.flatbuffer import model_io, read_tail
from fedtiny.model.runtime import Int8Runner
from fedtiny.model.user import UserModel
from fedtiny.ondevice.head import Int8Head

Log = Callable[[str], object]
CHUNK = 256


@dataclass(frozen=True)
class UserFleet:
    """What preparing a recorded fleet produced."""

    spec: FleetSpec  # with fleet.devices = the devices found in the data
    layout: FleetLayout
    int8_accuracy: float  # the deployed model on every device's test examples (base condition)
    float_accuracy: float | None  # a Keras model's float accuracy on the same examples
    device_names: tuple[str, ...]
    central_accuracy: (
        float  # a head re-trained centrally on every device's training examples (upper reference)
    )


class InputMaker:
    """Model inputs of recorded examples under a condition: generic knobs on the signal, then the front end."""

    def __init__(
        self, data: DataSection, seed: int, rec: Recordings, in_scale: float = 1.0, in_zp: int = 0
    ) -> None:
        self.rec, self.seed = rec, seed
        self.front = make_front_end(data.front_end, data.front_end_params, rec.sample_rate)
        self.in_scale, self.in_zp = in_scale, in_zp
        self.default = default_condition()
        self.background = rec.background
        if data.background:
            from fedtiny.data import load_background

            self.background = load_background(data.background, rec.sample_rate)

    def _signals(self, idx: np.ndarray) -> np.ndarray | list[np.ndarray]:
        raw = self.rec.raw
        if isinstance(raw, np.ndarray):
            signals: np.ndarray = raw[idx]
            return signals
        return [raw[int(i)] for i in idx]

    def __call__(self, idx: np.ndarray, cond: dict[str, float] | None = None) -> np.ndarray:
        """Model inputs (float32, or int8 already quantized) of examples ``idx`` under ``cond``."""
        cond = self.default if cond is None else cond
        sig = self._signals(idx)
        if self.rec.is_int8:  # quantized model inputs: knobs act on their real values
            if cond == self.default:
                return np.asarray(sig, dtype=np.int8)
            sig = (np.asarray(sig, dtype=np.float32) - np.float32(self.in_zp)) * np.float32(self.in_scale)
        if cond != self.default:
            key = hashlib.sha256(repr(sorted(cond.items())).encode()).digest()
            rng = np.random.default_rng([self.seed, 0xC0D, int.from_bytes(key[:8], "little")])
            sig = apply_condition(sig, cond, rng, self.background, self.rec.sample_rate)
        return self.front(sig)


class Featurizer:
    """Recording subset + condition → int8 features through the front end and the real int8 model."""

    def __init__(self, s: FleetSpec, rec: Recordings, tflite: bytes, log: Log) -> None:
        self.log = log
        self.runner = Int8Runner(tflite, "litert" if s.fleet.featurizer == "litert" else "tflm")
        io = model_io(tflite)
        self.inputs = InputMaker(s.data, s.seed, rec, io.input_scale, io.input_zero_point)
        self.default = self.inputs.default
        want = tuple(self.runner.input_shape[1:])
        got = tuple(self.inputs(np.arange(1)).shape[1:])
        if int(np.prod(got)) != int(np.prod(want)):
            raise DataError(
                f"{s.data.path}: the front end '{s.data.front_end}' gives inputs of shape {list(got)}, "
                f"the model takes {list(want)}"
            )

    def __call__(self, idx: np.ndarray, cond: dict[str, float]) -> np.ndarray:
        out = []
        for a in range(0, len(idx), CHUNK):
            out.append(self.runner.features(self.inputs(idx[a : a + CHUNK], cond)))
            if len(idx) > 4 * CHUNK and (a // CHUNK) % 8 == 7:
                self.log(f"featurizing: {a + CHUNK} of {len(idx)} examples")
        return np.concatenate(out) if out else np.zeros((0, 1), np.int8)


def load_user_model_and_data(
    s: FleetSpec, model: ModelSection, log: Log = print
) -> tuple[Recordings, UserModel]:
    """The recordings of ``s.data`` (labels in the model's class order) and the int8 model of ``model`` (a
    Keras model is converted with a seeded sample of the recordings as its representative set)."""
    from fedtiny.data import load_recordings
    from fedtiny.model.flatbuffer import metadata_classes
    from fedtiny.model.user import convert_keras, load_tflite

    d = s.data
    classes = tuple(model.classes) or (
        metadata_classes(Path(model.tflite).read_bytes()) if model.tflite else ()
    )
    rec = load_recordings(
        d.path,
        d.format,
        label_column=d.label_column,
        device_column=d.device_column,
        time_column=d.time_column,
        max_per_class=d.max_per_class,
        seed=s.seed,
        classes=classes,
    )
    devices = (
        f"{len(set(rec.device.tolist()))} devices"
        if rec.device is not None
        else f"no device ids (partitioned over {s.fleet.devices} devices)"
    )
    unlabelled = int(np.count_nonzero(~rec.labelled))
    without = (
        f"; {unlabelled} ({100 * unlabelled / len(rec):.1f}%) without a label (-1), used unlabelled"
        if unlabelled
        else ""
    )
    log(f"data: {len(rec)} examples, {len(rec.classes)} classes, {devices}{without}")
    if classes and rec.data_classes and tuple(rec.data_classes) != tuple(classes):
        where = "model.classes" if model.classes else "the model's label metadata"
        log(
            f"classes: the model's outputs 0..{len(classes) - 1} are {', '.join(classes)} ({where}); the data's own "
            f"order ({', '.join(rec.data_classes)}) is mapped onto them by name"
        )
    if model.tflite:
        um = load_tflite(model.tflite)
    else:
        if rec.is_int8:
            raise DataError(
                f"{d.path}: int8 inputs cannot calibrate a Keras model's conversion; give float inputs"
            )
        um = convert_keras(model.keras, InputMaker(d, s.seed, rec)(representative_indices(rec, s.seed)), log)
    log(
        f"model: {um.source.name}, {len(um.tflite)} bytes, head {um.io.head_path}, input {um.io.input_dtype} "
        f"{list(um.io.input_shape)}"
    )
    return rec, um


def representative_indices(rec: Recordings, seed: int, n: int = 300) -> np.ndarray:
    """A seeded sample of ``n`` labelled recordings (sorted) that calibrates a Keras model's int8 conversion;
    examples without a label are never used to calibrate or score."""
    labelled = np.flatnonzero(rec.labelled)
    idx: np.ndarray = np.sort(labelled[np.random.default_rng([seed, 0x4E9]).permutation(len(labelled))[:n]])
    return idx


def recording_times(rec: Recordings, fmt: str) -> np.ndarray | None:
    """When each example was recorded, as far as the data says. Class folders have no time of their own: the
    Speech Commands file name ``<speaker>_nohash_<n>.wav`` gives the repetition ``n``, and otherwise examples
    count as recorded at the same time (a seeded order, never the class-sorted file order, which would put
    whole classes only into the test set)."""
    if rec.time is not None or fmt != "folders":
        return rec.time
    import re

    reps = [re.search(r"_nohash_(\d+)", src) for src in rec.sources]
    return np.array([float(m.group(1)) if m else 0.0 for m in reps], dtype=np.float64)


def prepare_user_fleet(
    s: FleetSpec,
    train: TrainSection,
    rec: Recordings,
    tflite: bytes,
    out_dir: Path,
    log: Log = print,
    float_predict: Callable[[np.ndarray], np.ndarray] | None = None,
) -> UserFleet:
    """Devices, streams and pools of a user's data under ``out_dir/fleet``; reference sets for the server."""
    io = model_io(tflite)
    from fedtiny.model.flatbuffer import read_head

    head = read_head(tflite)
    if rec.y.size and int(rec.y.max()) >= head.num_classes:
        raise DataError(
            f"{s.data.path}: the data has {len(rec.classes)} classes, the model's head {head.num_classes}"
        )
    from fedtiny.data import detect_format

    fmt = s.data.format if s.data.format != "auto" else detect_format(Path(s.data.path))
    streams = device_streams(
        rec.y,
        rec.device,
        recording_times(rec, fmt),
        rec.device_names,
        s.fleet.devices,
        s.fleet.dirichlet_alpha,
        s.data.test_fraction,
        s.data.initial_fraction,
        s.seed,
        str(s.data.path),
    )
    s = s.with_devices(len(streams.names))
    feat = Featurizer(s, rec, tflite, log)
    labels = rec.y.astype(np.int64)
    tail = read_tail(tflite)
    layout = write_recorded_fleet(
        s, streams, labels, feat, feat.default, head.num_classes, tail, out_dir, log
    )
    root = out_dir / FLEET_DIR
    import json

    meta = json.loads((root / "layout.json").read_text())
    meta["per_tensor"] = io.per_tensor
    meta["classes"] = list(rec.classes)
    (root / "layout.json").write_text(json.dumps(meta, indent=1))
    # reference sets: every device's test examples and a calibration sample, in the fleet's base condition
    base = {**feat.default, **s.fleet.condition}
    test = streams.test[streams.test < len(labels)]
    gtest = feat(test, base)
    np.save(root / "global_test_feats.npy", gtest)
    np.save(root / "global_test_labels.npy", labels[test].astype(np.int16))
    trains = streams.stream[streams.stream >= 0]
    trains = trains[labels[trains] >= 0]  # calibration and every score use labelled examples only
    calib = np.sort(np.random.default_rng([s.seed, 0xCA1]).permutation(trains)[:300])
    np.save(root / "calib_feats.npy", feat(calib, base))
    from fedtiny.ondevice.head import predict_through

    int8_acc = float(np.mean(predict_through(head, read_tail(tflite), gtest) == labels[test]))
    central = central_head_accuracy(out_dir / FLEET_DIR, head, s.seed, train)
    log(
        f"reference: the shipped model {100 * int8_acc:.1f}% on the devices' latest examples; a head re-trained "
        f"centrally on all their earlier{' labelled' if np.any(labels < 0) else ''} examples {100 * central:.1f}%"
    )
    float_acc = None
    if float_predict is not None:
        float_acc = float(
            np.mean(float_predict(np.asarray(feat.inputs(test, base), dtype=np.float32)) == labels[test])
        )
    return UserFleet(s, layout, int8_acc, float_acc, streams.names, central)


def central_head_accuracy(
    fleet_dir: Path, head: Int8Head, seed: int, local: TrainSection, epochs: int = 30
) -> float:
    """What a centrally re-trained head reaches: the same last-layer SGD on every device's labelled training
    examples pooled (no privacy, no drift over time), re-quantized, then scored on every device's test examples.
    The reference the federated curve is measured against."""
    from fedtiny.fleet.recorded import RecordedFleetData
    from fedtiny.ondevice import TrainConfig, TrainJob, dequantize_head, quantize_head, train_heads
    from fedtiny.ondevice.head import predict_through

    data = RecordedFleetData(fleet_dir)
    k = np.arange(len(data.n_train))
    train = np.concatenate(
        [np.asarray(data.variant)[0, d] * data.n_examples + data.stream[d, : data.n_train[d]] for d in k]
    )
    feats, labels = data.gather(train)
    if np.any(labels < 0):  # examples without a label (-1) train no central head: it has no pseudo-labels
        feats, labels = feats[labels >= 0], labels[labels >= 0]
    fh = dequantize_head(head)
    cfg = TrainConfig(
        epochs, min(local.batch_size * 4, 256), local.lr, local.momentum, local.weight_decay, 0.0
    )
    res = train_heads(
        fh.weights,
        fh.bias,
        feats[None],
        labels[None].astype(np.int64),
        np.array([len(labels)]),
        TrainJob(
            cfg,
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=seed,
            round_=0,
            device_ids=np.array([0]),
        ),
    )
    if not np.isfinite(res.weights).all():
        return float("nan")
    from fedtiny.ondevice.head import FloatHead

    calib = np.load(fleet_dir / "calib_feats.npy")
    q = quantize_head(
        FloatHead(res.weights[0], res.bias[0]),
        head.input_scale,
        head.input_zero_point,
        calib,
        per_tensor=bool(data.meta.get("per_tensor", False)),
    )
    tf, tl = data.gather(data.test_indices(k, 0))
    correct = (predict_through(q, data.tail, tf) == tl).sum()
    return float(correct / data.test_counts(k).sum())
