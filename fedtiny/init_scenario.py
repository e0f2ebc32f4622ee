"""``fedtiny init``: inspect a user's model and data and write a commented scenario that runs as is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.data import Recordings, load_recordings
from fedtiny.errors import DataError
from fedtiny.model.user import UserModel, load_tflite

#: the common keyword-spotting front end gives this input (16 kHz, 1 s, 30 ms frames, 20 ms step, 10 MFCCs)
KWS_INPUT = (49, 10)


@dataclass(frozen=True)
class Inspection:
    model: UserModel
    data: Recordings
    front_end: str
    note: str  # why that front end
    classes: tuple[str, ...]  # the data's class names in the model's output order (a guess without metadata)
    class_note: str
    lr: float  # on-device learning rate that worked best in a quick central probe
    lr_note: str


def _front_end(um: UserModel, rec: Recordings) -> tuple[str, str]:
    """The front end that turns these recordings into this model's inputs, and why."""
    want = tuple(d for d in um.io.input_shape[1:])
    first = np.asarray(rec.raw[0])
    if int(np.prod(first.shape)) == int(np.prod(want)):
        return "none", f"the recordings have the model's input size ({list(first.shape)} -> {list(want)})"
    squeezed = tuple(d for d in want if d != 1)
    if rec.sample_rate and squeezed == KWS_INPUT:
        return (
            "mfcc",
            "audio clips and a 49x10 input: the speech-commands MFCC front end (16 kHz, 30/20 ms, 10 MFCCs)",
        )
    if rec.sample_rate:
        return "mfcc", (
            f"audio clips; the model takes {list(want)}: set front_end_params so the MFCC gives that shape, "
            'or name your own front end as "module:function"'
        )
    raise DataError(
        f"{rec.sources[0] if rec.sources else 'data'}: examples have shape {list(first.shape)}, the model "
        f"takes {list(want)}: give model inputs, or name a front end in [data] front_end"
    )


def inspect(model: Path, data: Path, seed: int = 0) -> Inspection:
    um = load_tflite(model)
    rec = load_recordings(data, classes=um.classes, seed=seed)
    if int(rec.y.max(initial=0)) >= um.num_classes:
        raise DataError(
            f"{data}: the data has {len(rec.classes)} classes ({', '.join(rec.classes[:12])}), the model "
            f"{model} has {um.num_classes} outputs"
        )
    fe, note = _front_end(um, rec)
    classes, class_note = _class_order(um, rec, fe, seed)
    lr, lr_note = _probe_lr(um, rec, fe, classes, seed)
    return Inspection(um, rec, fe, note, classes, class_note, lr, lr_note)


LR_CANDIDATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def _probe_lr(
    um: UserModel, rec: Recordings, front_end: str, classes: tuple[str, ...], seed: int
) -> tuple[float, str]:
    """The head's SGD learning rate that generalizes best on a seeded sample: train the head centrally for 5
    epochs (batch 16) on 75% of up to 1,200 examples, score the other 25%, pick the best of LR_CANDIDATES.
    Feature scales differ by orders of magnitude between models, so one default cannot fit them all."""
    from fedtiny.config.schema import Scenario
    from fedtiny.fleet.user_data import InputMaker
    from fedtiny.model.flatbuffer import read_head, read_tail
    from fedtiny.model.runtime import Int8Runner
    from fedtiny.ondevice import FloatHead, TrainConfig, dequantize_head, quantize_head, train_heads
    from fedtiny.ondevice.head import predict_through

    order = {c: i for i, c in enumerate(classes)}
    y_all = np.array([order.get(rec.classes[int(v)], int(v)) for v in rec.y], dtype=np.int64)
    idx = np.random.default_rng([seed, 0x1A]).permutation(len(rec))[:1200]  # shuffled: data are class-sorted
    if len(idx) < 8:
        return 0.05, "the default (too few examples to probe)"
    s = Scenario()
    s.data.front_end = front_end
    feats = Int8Runner(um.tflite, "litert").features(
        InputMaker(s, rec, um.io.input_scale, um.io.input_zero_point)(idx)
    )
    y = y_all[idx]
    cut = int(0.75 * len(idx))
    head, tail = read_head(um.tflite), read_tail(um.tflite)
    fh = dequantize_head(head)
    scores = {}
    for lr in LR_CANDIDATES:
        cfg = TrainConfig(5, 16, lr, 0.0, 0.0, 0.0)
        res = train_heads(
            fh.weights,
            fh.bias,
            feats[None, :cut],
            y[None, :cut],
            np.array([cut]),
            cfg,
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=seed,
            round_=0,
            device_ids=np.array([0]),
        )
        if not np.isfinite(res.weights).all():
            continue
        q = quantize_head(
            FloatHead(res.weights[0], res.bias[0]),
            head.input_scale,
            head.input_zero_point,
            feats[:cut],
            per_tensor=um.io.per_tensor,
        )
        scores[lr] = float(np.mean(predict_through(q, tail, feats[cut:]) == y[cut:]))
    base = float(np.mean(predict_through(head, tail, feats[cut:]) == y[cut:]))
    if not scores:
        return 0.005, "every probed rate diverged; the smallest candidate"
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, (
        f"probed by fedtiny init: a centrally trained head reached {100 * scores[best]:.0f}% with it on "
        f"{len(idx) - cut} held-out examples (the shipped head {100 * base:.0f}%)"
    )


def _class_order(um: UserModel, rec: Recordings, front_end: str, seed: int) -> tuple[tuple[str, ...], str]:
    """The data's class names in the model's output order. From the model's metadata when it has labels;
    otherwise matched by what the model predicts on the data (the assignment that maximizes accuracy)."""
    if um.classes:
        return um.classes, "class names from the model's label metadata"
    if len(rec.classes) != um.num_classes:
        return rec.classes, "the data's class names; check that they are in the model's output order"
    if rec.classes == tuple(str(i) for i in range(len(rec.classes))):  # unnamed: labels are output indices
        return rec.classes, "the data's labels are the model's output indices (no class names anywhere)"
    from scipy.optimize import linear_sum_assignment

    from fedtiny.config.schema import Scenario
    from fedtiny.fleet.user_data import InputMaker
    from fedtiny.model.runtime import Int8Runner

    s = Scenario()
    s.data.front_end = front_end
    idx = np.sort(np.random.default_rng(seed).permutation(len(rec))[:400])
    pred = Int8Runner(um.tflite, "litert").predict(
        InputMaker(s, rec, um.io.input_scale, um.io.input_zero_point)(idx)
    )
    conf = np.zeros((um.num_classes, um.num_classes))
    np.add.at(conf, (rec.y[idx], pred), 1)
    rows, cols = linear_sum_assignment(-conf)
    order = [""] * um.num_classes
    for r, c in zip(rows, cols):
        order[c] = rec.classes[r]
    as_is = np.trace(conf) / len(idx)
    best = conf[rows, cols].sum() / len(idx)
    if best <= as_is + 1e-9:
        return rec.classes, (
            f"the model has no label metadata: the data's class names in their own order, which "
            f"matches the model best ({100 * as_is:.0f}% on {len(idx)} examples); check it"
        )
    return tuple(order), (
        f"the model has no label metadata: the data's classes matched to its outputs by what it "
        f"predicts ({100 * best:.0f}% on {len(idx)} examples, vs {100 * as_is:.0f}% in the data's "
        "order); check it"
    )


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scenario_text(ins: Inspection, model: Path, data: Path, out: Path) -> str:
    """A commented scenario; paths are written relative to the scenario file."""
    um, rec = ins.model, ins.data

    def rel(p: Path) -> str:
        return Path(_relpath(p.resolve(), out.resolve().parent)).as_posix()

    devices = len(set(rec.device.tolist())) if rec.device is not None else 0
    per_device = len(rec) / devices if devices else 0.0
    rounds = 20
    lines = [
        f"# Written by `fedtiny init` for {model.name} and {data.name}. Run it with: fedtiny run {out.name}",
        f"# Model: {um.io.head_path}, input {um.io.input_dtype} {list(um.io.input_shape)}, {len(um.tflite)} bytes.",
        f"# Data: {len(rec)} examples, {len(rec.classes)} classes"
        + (f", {devices} devices (about {per_device:.0f} examples each)." if devices else ", no device ids."),
        f'name = "{out.stem}"',
        "seed = 0",
        f"rounds = {rounds}  # each device's training examples arrive in time order over these rounds",
        "",
        "[model]",
        f"tflite = {_q(rel(model))}",
    ]
    lines.append(f"# {ins.class_note}")
    lines.append("classes = [" + ", ".join(_q(c) for c in ins.classes) + "]")
    lines += [
        "",
        "[data]",
        f"path = {_q(rel(data))}",
        f'front_end = "{ins.front_end}"  # {ins.note}',
        "test_fraction = 0.25  # each device's latest examples are its local test set",
        "initial_fraction = 0.5  # share of its training examples a device has before round 1",
        "",
        "[fleet]",
    ]
    if devices:
        lines.append(f"# the fleet is the data's {devices} devices (fleet.devices is ignored)")
        lines.append(f"devices_per_gateway = {max(1, min(50, devices // 4 or 1))}")
    else:
        n = max(2, min(100, len(rec) // 40))
        lines.append(
            f"devices = {n}  # the data names no devices: it is partitioned over these (Dirichlet alpha)"
        )
        lines.append("dirichlet_alpha = 0.5")
        lines.append(f"devices_per_gateway = {max(1, n // 4)}")
    lines += [
        "cache_size = 200  # int8 feature ring buffer per device",
        'board = "nano33ble"',
        "",
        "[train]  # on-device SGD of the last layer",
        "epochs = 2",
        "batch_size = 16",
        f"lr = {ins.lr}  # {ins.lr_note}",
        "",
        "[strategy]",
        'name = "fedavg"',
        "fraction = 0.5  # devices sampled per round",
        "",
        "# Drift you want to test on top of what is in the data, e.g. a quieter microphone on a third of the fleet:",
        "# [[drift]]",
        f"# at = {rounds // 2}",
        "# fraction = 0.33",
        '# group = "quiet"',
        "# condition = { gain = 0.5 }",
        "",
    ]
    return "\n".join(lines)


def _relpath(path: Path, start: Path) -> str:
    import os

    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive (Windows)
        return str(path)


def write_scenario(model: Path, data: Path, out: Path) -> Inspection:
    ins = inspect(model, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(scenario_text(ins, model, data, out))
    return ins
