"""``fedtiny init``: inspect a user's model and data and write a commented scenario that runs as is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.data import Recordings, load_recordings
from fedtiny.errors import DataError
from fedtiny.init_probe import SCORE_RULE, FeatureBank, ProbeResult, federated_probe
from fedtiny.model.user import UserModel, load_tflite

#: model files `init` converts with TensorFlow, as `fedtiny run` does for ``[model] keras``
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
#: how many recordings (a seeded sample) calibrate a Keras model's int8 conversion (fedtiny/fleet/user_data.py)
KERAS_REPRESENTATIVE = 300

Log = Callable[[str], Any]

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
    class_alternative: tuple[
        str, ...
    ] = ()  # an order that scored higher but was not taken (written commented)
    probe: ProbeResult | None = None  # the federated probe (None: skipped, or too little data)
    probe_note: str = ""  # why there is no probe
    seed: int = 0
    keras_note: str = ""  # what init did with a Keras model ("": a .tflite model)
    labels: LabelShare | None = None  # the labelled share of the fleet's devices (None: not split yet)


@dataclass(frozen=True)
class LabelShare:
    """How much of the data has labels: overall and over the devices of the run's split."""

    overall: float  # labelled examples / examples
    unlabelled: int  # examples with label -1
    low: float  # per device (labelled / its examples): min, median, max
    median: float
    high: float
    devices: int  # devices of the split (those with a labelled example and 2 or more examples)
    left_out: int  # devices of the data left out for lack of a labelled example

    @classmethod
    def of(cls, y: np.ndarray, streams: Any, data_devices: int) -> LabelShare:
        """From labels (-1: none) and :func:`fedtiny.fleet.recorded.device_streams` of them (None: the data as
        one device)."""
        lab = np.asarray(y) >= 0
        per = [] if streams is not None else [float(np.mean(lab)) if len(lab) else 1.0]
        for d in range(len(streams.n_train) if streams is not None else 0):
            ex = np.concatenate(
                [streams.stream[d, : streams.n_train[d]], streams.test[d, : streams.n_test[d]]]
            )
            per.append(float(np.mean(lab[ex])))
        shares = np.array(per) if per else np.ones(1)
        return cls(
            float(np.mean(lab)) if len(lab) else 1.0,
            int(np.count_nonzero(~lab)),
            float(shares.min()),
            float(np.median(shares)),
            float(shares.max()),
            len(per),
            max(0, data_devices - len(per)),
        )

    def line(self) -> str:
        """One line for the console and the scenario's comment."""
        if not self.unlabelled:
            return "every example is labelled"
        left = (
            f"; {self.left_out} device(s) of the data hold no labelled example and are left out (no test set)"
            if self.left_out
            else ""
        )
        return (
            f"{100 * self.overall:.1f}% of the examples are labelled; per device (labelled / its examples, "
            f"{self.devices} devices) min {100 * self.low:.1f}%, median {100 * self.median:.1f}%, max "
            f"{100 * self.high:.1f}%{left}"
        )


def is_keras(model: Path) -> bool:
    return model.suffix.lower() in KERAS_SUFFIXES


def _front_end(want: tuple[int, ...], rec: Recordings) -> tuple[str, str]:
    """The front end that turns these recordings into inputs of a model taking ``want`` (no batch axis), and why."""
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


#: what `init` writes for the fleet and training (and what its probes assume)
TEST_FRACTION, INITIAL_FRACTION, EPOCHS, BATCH_SIZE, FRACTION, CACHE_SIZE, ALPHA = (
    0.25,
    0.5,
    2,
    16,
    0.5,
    200,
    0.5,
)


#: what the scenario and the console say the examples without a label are for
_UNLABELLED_USE = (
    "the examples without a label (-1) are used unlabelled: they are never tested and train only when a board "
    "labels them itself ([labels] pseudo)"
)


def partition_devices(rec: Recordings) -> int:
    """How many devices `init` partitions data without device ids over."""
    return max(2, min(100, len(rec) // 40))


def _keras_model(
    model: Path, data: Path, seed: int, tf_log: Path | None
) -> tuple[UserModel, Recordings, str, str, str]:
    """A Keras model converted to full-integer int8 exactly as `fedtiny run` converts ``[model] keras``
    (:func:`fedtiny.fleet.user_data.load_user_model_and_data`: a seeded sample of the recordings, through the
    front end, calibrates it), TensorFlow's output going to ``tf_log``: the model, recordings, front end, why,
    and what was done (one line)."""
    from fedtiny.config.schema import DataSection
    from fedtiny.fleet.user_data import InputMaker, representative_indices
    from fedtiny.model.quiet import log_to
    from fedtiny.model.user import convert_keras

    if not model.is_file():  # before the data are read: the first thing wrong is named
        from fedtiny.errors import ModelError

        raise ModelError(f"{model}: model file not found")
    rec = load_recordings(data, seed=seed)
    fe: list[tuple[str, str]] = []

    def representative(shape: tuple[int, ...]) -> np.ndarray:
        fe.append(_front_end(shape, rec))
        if rec.is_int8:
            raise DataError(
                f"{data}: int8 inputs cannot calibrate a Keras model's conversion; give float inputs"
            )
        d = DataSection()
        d.front_end = fe[0][0]
        idx = representative_indices(rec, seed, KERAS_REPRESENTATIVE)  # the run's sample (labelled ones)
        return np.asarray(InputMaker(d, seed, rec)(idx), dtype=np.float32)

    with log_to(tf_log):
        um = convert_keras(model, representative, lambda _: None)
    n = min(int(np.count_nonzero(rec.labelled)), KERAS_REPRESENTATIVE)
    which = "recordings" if rec.labelled.all() else "labelled recordings"
    where = f"; TensorFlow's output in {tf_log}" if tf_log is not None else ""
    note = (
        f"model: converted {model.name} to full-integer int8 as `fedtiny run` does ({len(um.tflite)} bytes, "
        f"head {um.io.head_path}, calibrated on {n} {which}, a seeded sample); the probes use it and the "
        f"scenario names the Keras file ([model] keras), which each run converts the same way{where}"
    )
    return um, rec, fe[0][0], fe[0][1], note


def inspect(
    model: Path,
    data: Path,
    seed: int = 0,
    probe: bool = True,
    log: Log | None = None,
    tf_log: Path | None = None,
) -> Inspection:
    """Model, data, front end, class order, on-device learning rate and (``probe``) the federated recipe.

    A Keras model (:data:`KERAS_SUFFIXES`) is converted to int8 first, TensorFlow's output going to ``tf_log``.
    """
    import dataclasses

    from fedtiny.data import detect_format
    from fedtiny.fleet.recorded import device_streams
    from fedtiny.fleet.user_data import recording_times

    keras_note = ""
    if is_keras(model):
        um, rec, fe, note, keras_note = _keras_model(model, data, seed, tf_log)
        if log is not None:
            log(keras_note)
    else:
        um = load_tflite(model)
        rec = load_recordings(data, classes=um.classes, seed=seed)
    if int(rec.y.max(initial=0)) >= um.num_classes:
        raise DataError(
            f"{data}: the data has {len(rec.classes)} classes ({', '.join(rec.classes[:12])}), the model "
            f"{model} has {um.num_classes} outputs"
        )
    if not keras_note:
        fe, note = _front_end(tuple(um.io.input_shape[1:]), rec)
    bank = FeatureBank(um, rec, fe)
    classes, class_note, alternative = _class_order(um, rec, bank, seed)
    if log is not None:
        log(f"classes: {class_note}")
    order = {c: i for i, c in enumerate(classes)}
    # the model's output of each label; -1 (no label) stays -1
    y = np.array(
        [order.get(rec.classes[int(v)], int(v)) if v >= 0 else -1 for v in rec.y.tolist()], dtype=np.int64
    )
    # the run's split: each device's latest examples are its local test set, which no probe looks at
    streams = device_streams(
        y,
        rec.device,
        recording_times(rec, detect_format(Path(data))),
        rec.device_names,
        partition_devices(rec),
        ALPHA,
        TEST_FRACTION,
        INITIAL_FRACTION,
        seed,
        str(data),
    )
    share = LabelShare.of(y, streams, len(rec.device_names) if rec.device is not None else len(streams.names))
    if log is not None:
        log(f"labels: {share.line()}" + (f"; {_UNLABELLED_USE}" if share.unlabelled else ""))
    lr, lr_note = _probe_lr(um, bank, y, streams, seed)
    ins = Inspection(
        um,
        rec,
        fe,
        note,
        classes,
        class_note,
        lr,
        lr_note,
        alternative,
        seed=seed,
        keras_note=keras_note,
        labels=share,
    )
    if not probe:
        return dataclasses.replace(ins, probe_note="not probed (fedtiny init --no-probe)")
    res = federated_probe(
        um,
        bank,
        y,
        streams,
        lr,
        seed,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        fraction=FRACTION,
        cache_size=CACHE_SIZE,
        initial_fraction=INITIAL_FRACTION,
        log=log,
    )
    if res is None:
        return dataclasses.replace(ins, probe_note="not probed: too few training examples to hold some out")
    if log is not None:
        log(res.header() + f"; {res.seconds:.0f} s")
        for line in res.rows():
            log("  " + line)
    return dataclasses.replace(ins, probe=res)


LR_CANDIDATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def _probe_lr(
    um: UserModel, bank: FeatureBank, y_all: np.ndarray, streams: Any, seed: int
) -> tuple[float, str]:
    """The head's SGD learning rate that generalizes best on a seeded sample: train the head centrally for 5
    epochs (batch 16) on 75% of up to 1,200 examples of the devices' training parts, score the other 25%, pick
    the best of LR_CANDIDATES. Feature scales differ by orders of magnitude between models, so one default
    cannot fit them all."""
    from fedtiny.model.flatbuffer import read_head, read_tail
    from fedtiny.ondevice import FloatHead, TrainConfig, TrainJob, dequantize_head, quantize_head, train_heads
    from fedtiny.ondevice.head import predict_through

    trains = streams.stream[streams.stream >= 0].astype(np.int64)
    trains = trains[y_all[trains] >= 0]  # labelled examples only: they train and score
    idx = np.random.default_rng([seed, 0x1A]).permutation(trains)[:1200]  # shuffled: data are class-sorted
    if len(idx) < 8:
        return 0.05, "the default (too few examples to probe)"
    feats = bank(idx)
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


def near_chance(num_classes: int, n: int) -> float:
    """The accuracy below which the data's class order counts as near chance on the model's predictions:
    ``max(1/C + 3·se, min(2/C, 1/C + 0.10))`` with ``se = sqrt((1/C)(1 − 1/C)/n)`` (a uniformly random
    order of C names scores 1/C in expectation). Returns the threshold; the caller compares."""
    chance = 1.0 / num_classes
    se = float(np.sqrt(chance * (1 - chance) / max(1, n)))
    return max(chance + 3 * se, min(2 * chance, chance + 0.10))


def _class_order(
    um: UserModel, rec: Recordings, bank: FeatureBank, seed: int
) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """The data's class names in the model's output order, why, and an order that scored higher but was not
    taken. From the model's metadata when it has labels. Otherwise the data's own order is kept unless it is
    near chance on what the model predicts (:func:`near_chance`); only then are the classes matched to the
    outputs by the assignment that maximizes accuracy. A permutation that scores higher than a data order
    above chance is reported, never applied: the outputs of a deployed model must not change meaning silently."""
    if um.classes:
        return um.classes, "class names from the model's label metadata", ()
    if len(rec.classes) != um.num_classes:
        return rec.classes, "the data's class names; check that they are in the model's output order", ()
    if rec.classes == tuple(str(i) for i in range(len(rec.classes))):  # unnamed: labels are output indices
        return rec.classes, "the data's labels are the model's output indices (no class names anywhere)", ()
    from scipy.optimize import linear_sum_assignment

    from fedtiny.model.flatbuffer import read_head, read_tail
    from fedtiny.ondevice.head import predict_through

    labelled = np.flatnonzero(rec.labelled)  # examples without a label (-1) cannot score an order
    idx = np.sort(labelled[np.random.default_rng(seed).permutation(len(labelled))[:400]])
    pred = predict_through(read_head(um.tflite), read_tail(um.tflite), bank(idx))
    conf = np.zeros((um.num_classes, um.num_classes))
    np.add.at(conf, (rec.y[idx], pred), 1)
    rows, cols = linear_sum_assignment(-conf)
    order = [""] * um.num_classes
    for r, c in zip(rows, cols):
        order[c] = rec.classes[r]
    n = len(idx)
    as_is = np.trace(conf) / n
    best = conf[rows, cols].sum() / n
    floor = near_chance(um.num_classes, n)
    moved = ", ".join(
        f"{name} to output {order.index(name)}" for i, name in enumerate(rec.classes) if order[i] != name
    )
    if best <= as_is + 1e-9:
        return (
            rec.classes,
            (
                f"the model has no label metadata: the data's class names in their own order, which "
                f"matches the model best ({100 * as_is:.0f}% on {n} examples); check it"
            ),
            (),
        )
    if as_is >= floor:
        return (
            rec.classes,
            (
                f"the model has no label metadata: the data's own order is kept ({100 * as_is:.0f}% on {n} "
                f"examples, above the near-chance line {100 * floor:.0f}%); another order scores "
                f"{100 * best:.0f}% (moves {moved}) but is not applied: check which is right"
            ),
            tuple(order),
        )
    return (
        tuple(order),
        (
            f"the model has no label metadata and the data's own order is near chance on its predictions "
            f"({100 * as_is:.0f}% on {n} examples, below {100 * floor:.0f}%): the classes are matched to its "
            f"outputs by what it predicts ({100 * best:.0f}%; moves {moved}); check it"
        ),
        (),
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
        f"# Model: {um.io.head_path}, input {um.io.input_dtype} {list(um.io.input_shape)}, {len(um.tflite)} bytes"
        + (" (converted to int8 from Keras)." if ins.keras_note else "."),
        f"# Data: {len(rec)} examples, {len(rec.classes)} classes"
        + (f", {devices} devices (about {per_device:.0f} examples each)" if devices else ", no device ids")
        + (
            f"; {int(np.count_nonzero(~rec.labelled))} without a label (see [labels])."
            if not rec.labelled.all()
            else "."
        ),
        f'name = "{out.stem}"',
        f"seed = {ins.seed}",
        f"rounds = {rounds}  # each device's training examples arrive in time order over these rounds",
        "",
        "[model]",
    ]
    if ins.keras_note:
        lines.append(
            "# a Keras model: each run converts it to full-integer int8, calibrated on a seeded sample of "
            f"{min(int(np.count_nonzero(rec.labelled)), KERAS_REPRESENTATIVE)} "
            + ("recordings" if rec.labelled.all() else "labelled recordings")
        )
        lines.append(f"keras = {_q(rel(model))}")
    else:
        lines.append(f"tflite = {_q(rel(model))}")
    lines.append(f"# {ins.class_note}")
    lines.append("classes = [" + ", ".join(_q(c) for c in ins.classes) + "]")
    if ins.class_alternative:
        lines.append("# the order that scores higher on the model's predictions (not applied; see above):")
        lines.append("# classes = [" + ", ".join(_q(c) for c in ins.class_alternative) + "]")
    lines += [
        "",
        "[data]",
        f"path = {_q(rel(data))}",
        f'front_end = "{ins.front_end}"  # {ins.note}',
        f"test_fraction = {TEST_FRACTION}  # each device's latest "
        + ("labelled " if not rec.labelled.all() else "")
        + "examples are its local test set",
        f"initial_fraction = {INITIAL_FRACTION}  # share of its training examples a device has before round 1",
        "",
    ]
    lines += _labels_lines(ins)
    lines += [
        "",
        "[fleet]",
    ]
    if devices:
        lines.append(f"# the fleet is the data's {devices} devices (fleet.devices is ignored)")
        lines.append(f"devices_per_gateway = {max(1, min(50, devices // 4 or 1))}")
    else:
        n = partition_devices(rec)
        lines.append(
            f"devices = {n}  # the data names no devices: it is partitioned over these (Dirichlet alpha)"
        )
        lines.append(f"dirichlet_alpha = {ALPHA}")
        lines.append(f"devices_per_gateway = {max(1, n // 4)}")
    lines += [
        f"cache_size = {CACHE_SIZE}  # int8 feature ring buffer per device",
        'board = "nano33ble"',
        "",
        "[train]  # on-device SGD of the last layer",
        f"epochs = {EPOCHS}",
        f"batch_size = {BATCH_SIZE}",
    ]
    lines += _recipe_lines(ins)
    what, group = _drift_example(rec)
    lines += [
        "",
        f"# Drift you want to test on top of what is in the data, e.g. {what} on a third of the fleet:",
        "# [[drift]]",
        f"# at = {rounds // 2}",
        "# fraction = 0.33",
        f'# group = "{group}"',
        "# condition = { gain = 0.5 }",
        "",
    ]
    return "\n".join(lines)


def _labels_lines(ins: Inspection) -> list[str]:
    """``[labels]``: the data's own missing labels (-1) are the partial labelling; ``fraction`` stays 1.0."""
    share = ins.labels or LabelShare.of(ins.data.y, None, 0)
    out = ["[labels]", f"# {share.line()}"]
    if share.unlabelled:
        out.append(f"# {_UNLABELLED_USE}.")
        out.append(
            "# fraction applies on top of the data's missing labels (a -1 example never gets one; a labelled "
            "one keeps its label with probability fraction): 1.0 keeps every label the data has"
        )
    out.append("fraction = 1.0  # share of the labelled examples whose label reaches the device")
    if share.unlabelled:
        out.append(
            "# pseudo = 0.9  # boards label an unlabelled example themselves when their int8 head is this sure"
        )
    return out


def _drift_example(rec: Recordings) -> tuple[str, str]:
    """What the template's example drift (half the gain) means for the data it saw, and a group name."""
    if rec.sample_rate:  # audio clips
        return "a quieter microphone", "quiet"
    if rec.is_int8:  # the model's own int8 inputs
        return "inputs at half their amplitude", "weak"
    return "a sensor whose gain has dropped by half", "weak"


def _recipe_lines(ins: Inspection) -> list[str]:
    """``train.lr`` and ``[strategy]``: the federated probe's winner with what was tried, or FedAvg."""
    p = ins.probe
    if p is None:
        return [
            f"lr = {ins.lr}  # {ins.lr_note}",
            "",
            "[strategy]",
            f"# {ins.probe_note}: FedAvg; the server optimizers (fedavgm, fedadam, fedyogi with server_lr) "
            "may fit better",
            'name = "fedavg"',
            f"fraction = {FRACTION}  # devices sampled per round",
        ]
    best = p.best.candidate
    if best.lr == ins.lr:
        lr_line = f"lr = {ins.lr:g}  # {ins.lr_note}"
    else:
        lr_line = (
            f"lr = {best.lr:g}  # picked by the federated probe below; the central probe gave {ins.lr:g}"
        )
    out = [lr_line, "", "[strategy]"]
    mid = p.rounds // 2
    sample = f"{p.devices} devices" if p.devices == p.of_devices else f"{p.devices} of {p.of_devices} devices"
    out.append(
        f"# picked by fedtiny init's federated probe (seed {ins.seed}): {p.rounds} rounds on {sample}, held-out "
        f"accuracy on {p.held_out} examples of their training data (std err about {100 * p.stderr:.1f} pts); "
        f"{SCORE_RULE}. Tried (held-out accuracy at round {mid} -> round {p.rounds}, score):"
    )
    for t in p.tried:
        mark = "  <- this one" if t is p.best else ""
        out.append(
            f"#   {t.candidate.label():<34} {100 * t.curve[mid]:5.1f}% -> {100 * t.curve[-1]:5.1f}%, "
            f"{100 * t.score:5.1f}{mark}"
        )
    out.append(f'name = "{best.name}"')
    if best.server_lr:
        out.append(f"server_lr = {best.server_lr:g}  # eta / server_learning_rate")
        out.append("server_momentum = 0.9  # FedAvgM momentum, FedAdam/FedYogi beta_1")
    out.append(f"fraction = {FRACTION}  # devices sampled per round")
    return out


def _relpath(path: Path, start: Path) -> str:
    import os

    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive (Windows)
        return str(path)


def init_log(out: Path) -> Path:
    """Where `init` puts TensorFlow's output (a Keras model): beside the scenario, ``NAME.init.log``."""
    return out.with_name(out.stem + ".init.log")


def write_scenario(
    model: Path, data: Path, out: Path, seed: int = 0, probe: bool = True, log: Log | None = None
) -> Inspection:
    tf_log = None
    if is_keras(model):
        tf_log = init_log(out)
        tf_log.parent.mkdir(parents=True, exist_ok=True)
        tf_log.write_text("")  # this init's output only
    ins = inspect(model, data, seed=seed, probe=probe, log=log, tf_log=tf_log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(scenario_text(ins, model, data, out))
    return ins
