"""Bring your own model and data (issue 8): int8 classifiers that end in SOFTMAX, a user's recordings, end to end.

The models are made here with plain TensorFlow (not fedtiny's task code), the way users make theirs: float or
int8 input/output, a RESHAPE before the SOFTMAX, per-tensor weight scales. The data are npz/folder files
written here. Every check compares with the real TFLite Micro interpreter or asserts a user-visible outcome.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import model_io, read_head, read_tail, write_head
from fedtiny.model.runtime import Int8Runner
from fedtiny.ondevice import FloatHead, dequantize_head, quantize_head
from fedtiny.ondevice.head import head_forward_int8, predict_through, tail_for_head

C, D = 4, 12


def _protos() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(C, D)).astype(np.float32)


def _examples(
    rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, C, n)
    x = _protos()[y] + 0.9 * rng.normal(size=(n, D)).astype(np.float32) + shift
    return x.astype(np.float32), y


def _convert(model: object, rep: np.ndarray, int8_io: bool, per_tensor: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    if per_tensor:
        conv._experimental_disable_per_channel = True
    return bytes(conv.convert())


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    """Users' models: Dense backbone -> Dense head -> (RESHAPE) -> SOFTMAX, trained on a 'factory' speaker."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = _examples(np.random.default_rng(1), 2000)
    out: dict[str, bytes] = {}
    for name, reshape, int8_io, per_tensor in [
        ("float_io", False, False, False),
        ("int8_reshape", True, True, False),
        ("per_tensor", False, True, True),
    ]:
        inp = keras.Input((D,), batch_size=1)
        h = keras.layers.Dense(16, activation="relu")(inp)
        h = keras.layers.Dense(C)(h)
        if reshape:
            h = keras.layers.Reshape((1, C))(h)
        prob = keras.layers.Softmax()(h)
        m = keras.Model(inp, prob)
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(x, y[:, None] if reshape else y, epochs=4, batch_size=32, verbose=0)
        out[name] = _convert(m, x[:200], int8_io, per_tensor)
    return out


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    x, y = _examples(np.random.default_rng(2), 1500)
    inp = keras.Input((D,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(h)))
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=4, batch_size=32, verbose=0)
    p = tmp_path_factory.mktemp("keras") / "model.keras"
    m.save(p)
    return p


def _device_data(
    path: Path, devices: int = 8, per_device: int = 60, names: bool = True, ids: bool = True
) -> Path:
    """Each device is a 'speaker' with its own offset; its later examples drift further (aging sensor)."""
    rng = np.random.default_rng(5)
    xs, ys, ds, ts = [], [], [], []
    for dv in range(devices):
        off = rng.normal(size=D).astype(np.float32) * 0.8
        x, y = _examples(rng, per_device, off)
        x += np.linspace(0, 0.6, per_device, dtype=np.float32)[:, None]  # drift in the data over time
        xs.append(x)
        ys.append(y)
        ds.append(np.full(per_device, 100 + dv))
        ts.append(1000.0 * dv + np.arange(per_device)[::-1][rng.permutation(per_device)].argsort())
    arrays = {"x": np.concatenate(xs), "y": np.concatenate(ys)}
    if ids:
        arrays.update(device=np.concatenate(ds), time=np.concatenate(ts))
    if names:
        arrays["classes"] = np.array(["a", "b", "c", "d"])
    np.savez(path, **arrays)
    return path


def _scenario(tmp: Path, model: Path, data: Path, extra: str = "", rounds: int = 8) -> Path:
    p = tmp / "s.toml"
    p.write_text(
        f'name = "byom"\nseed = 3\nrounds = {rounds}\n[model]\ntflite = "{model}"\n[data]\npath = "{data}"\n'
        f"[fleet]\ndevices_per_gateway = 3\n[train]\nlr = 0.05\n[strategy]\nfraction = 0.5\n"
        f'[runtime]\nengine = "inline"\n{extra}'
    )
    return p


# -- the model: head found through the tail, bit-exact with TFLite Micro ------------------------------------


@pytest.mark.parametrize(
    "name,tail",
    [
        ("float_io", ["SOFTMAX", "DEQUANTIZE"]),
        ("int8_reshape", ["RESHAPE", "SOFTMAX"]),
        ("per_tensor", ["SOFTMAX"]),
    ],
)
def test_head_through_tail_is_bit_exact_with_tflm_before_and_after_a_patch(
    models: dict[str, bytes], name: str, tail: list[str]
) -> None:
    model = models[name]
    head, t = read_head(model), read_tail(model)
    assert head.weights.shape == (C, 16) and [op.kind for op in t.ops] == tail
    x, _ = _examples(np.random.default_rng(9), 300)
    for m, h in [(model, head), (None, None)]:
        if m is None:  # a re-trained, re-quantized head written into the model: the logit scale moves
            fh = dequantize_head(head)
            new = FloatHead(fh.weights * 1.7 + 0.05, fh.bias - 0.3)
            h = quantize_head(
                new,
                head.input_scale,
                head.input_zero_point,
                np.random.default_rng(1).integers(-128, 127, (64, 16)).astype(np.int8),
                per_tensor=model_io(model).per_tensor,
            )
            assert (h.output_scale, h.output_zero_point) != (head.output_scale, head.output_zero_point)
            m = write_head(model, h)
        assert h is not None
        runner = Int8Runner(m, "tflm")
        logits, feats = runner.run(x)
        final = np.stack(runner.final)
        np.testing.assert_array_equal(head_forward_int8(h, feats), logits)
        spec = tail_for_head(t, h).apply(head_forward_int8(h, feats))
        np.testing.assert_array_equal(
            spec.reshape(final.shape), final
        )  # exact, through SOFTMAX (and DEQUANTIZE)
        np.testing.assert_array_equal(predict_through(h, t, feats), runner.predict(x))


def test_per_tensor_heads_keep_one_scale_and_bias_scale_is_written(models: dict[str, bytes]) -> None:
    pt = models["per_tensor"]
    assert model_io(pt).per_tensor and not model_io(models["int8_reshape"]).per_tensor
    head = read_head(pt)
    fh = dequantize_head(head)
    calib = np.random.default_rng(0).integers(-128, 127, (32, 16)).astype(np.int8)
    per_channel = quantize_head(
        FloatHead(fh.weights * np.arange(1, C + 1)[:, None], fh.bias),
        head.input_scale,
        head.input_zero_point,
        calib,
    )
    with pytest.raises(ModelError, match="per tensor"):
        write_head(pt, per_channel)
    shared = quantize_head(
        FloatHead(fh.weights * np.arange(1, C + 1)[:, None], fh.bias),
        head.input_scale,
        head.input_zero_point,
        calib,
        per_tensor=True,
    )
    assert len(set(shared.weight_scales.tolist())) == 1
    assert read_head(write_head(pt, shared)).equals(shared)
    # the bias tensor's own scale follows input scale x weight scale (tools that dequantize the bias read it)
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    h2 = read_head(models["int8_reshape"])
    f2 = dequantize_head(h2)
    patched = write_head(
        models["int8_reshape"],
        quantize_head(FloatHead(f2.weights * 3, f2.bias), h2.input_scale, h2.input_zero_point, calib),
    )
    m = fb.Model.GetRootAsModel(patched, 0)
    sg = m.Subgraphs(0)
    fc = next(
        sg.Operators(i)
        for i in range(sg.OperatorsLength())
        if m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode() == fb.BuiltinOperator.FULLY_CONNECTED
        and sg.Tensors(sg.Operators(i).Inputs(1)).ShapeAsNumpy()[0] == C
    )
    new = read_head(patched)
    bias_scale = sg.Tensors(fc.Inputs(2)).Quantization().ScaleAsNumpy()
    np.testing.assert_allclose(bias_scale, np.float32(new.input_scale) * new.weight_scales, rtol=1e-6)


def test_info_shows_head_path_and_refuses_unusable_models_naming_the_file(
    models: dict[str, bytes], tmp_path: Path
) -> None:
    import keras
    import tensorflow as tf

    ok = tmp_path / "kws.tflite"
    ok.write_bytes(models["float_io"])
    res = CliRunner().invoke(cli, ["info", str(ok)])
    assert res.exit_code == 0, res.output
    assert (
        "FULLY_CONNECTED 16→4 → SOFTMAX → DEQUANTIZE" in res.output
        and "input:    float32 [1, 12]" in res.output
    )
    assert "features:" in res.output and "classes:" in res.output
    inp = keras.Input((D,), batch_size=1)
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(keras.layers.Dense(16)(inp))))
    float_model = tmp_path / "float.tflite"
    float_model.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    dyn = tf.lite.TFLiteConverter.from_keras_model(m)
    dyn.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
    dyn_model = tmp_path / "dynamic.tflite"
    dyn_model.write_bytes(dyn.convert())
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(models["float_io"][:300])
    for path, words in [
        (float_model, "not a full-integer int8 model"),
        (dyn_model, "not a full-integer int8 model"),
        (garbage, "corrupt or truncated"),
        (tmp_path / "missing.tflite", "not found"),
    ]:
        res = CliRunner().invoke(cli, ["info", str(path)])
        assert res.exit_code == 2, (path, res.output)
        assert words in res.output and str(path) in res.output and "Traceback" not in res.output
    # a head without a bias (use_bias=False, or an all-zero bias the converter dropped) gets a zero one
    keras.utils.set_random_seed(2)
    nob = keras.Model(
        inp, keras.layers.Softmax()(keras.layers.Dense(C, use_bias=False)(keras.layers.Dense(16)(inp)))
    )
    no_bias = tmp_path / "nobias.tflite"
    no_bias.write_bytes(_convert(nob, np.random.default_rng(0).normal(size=(64, D)).astype(np.float32), True))
    with pytest.raises(ModelError, match="no bias"):
        read_head(no_bias.read_bytes())
    res = CliRunner().invoke(cli, ["info", str(no_bias)])
    assert res.exit_code == 0 and "FULLY_CONNECTED 16→4 → SOFTMAX" in res.output, res.output
    from fedtiny.model.user import load_tflite

    fixed = load_tflite(no_bias).tflite
    assert not read_head(fixed).bias.any()
    x = np.random.default_rng(1).normal(size=(20, D)).astype(np.float32)
    r = Int8Runner(fixed, "tflm")
    r.run(x)
    assert r.predict(x).shape == (20,)
    exported = tmp_path / "f.h"
    assert (
        CliRunner().invoke(cli, ["export", str(float_model), "--header", str(exported)]).exit_code == 0
    )  # no head needed
    assert exported.read_text().count("0x") == float_model.stat().st_size


# -- the data: devices from the data, time order, end to end ------------------------------------------------


def test_run_on_a_users_model_and_device_data(models: dict[str, bytes], tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(models["float_io"])
    data = _device_data(tmp_path / "d.npz")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", str(_scenario(tmp_path, model, data)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    resolved = tomllib.loads((out / "scenario.resolved.toml").read_text())
    assert resolved["fleet"]["devices"] == 8 and summary["devices"] == 8  # the fleet is the data's devices
    assert summary["task"] == "data d.npz" and summary["base_model"]["head"].endswith("SOFTMAX → DEQUANTIZE")
    assert summary["final_accuracy"] > summary["initial_accuracy"] + 0.05  # federated head training helps
    assert 0 < summary["base_model"]["central_head_accuracy"] <= 1
    meta = json.loads((out / "fleet" / "layout.json").read_text())
    assert meta["kind"] == "recorded" and meta["device_names"][:2] == ["100", "101"]
    # every device tests on its latest quarter (time order): 15 of its 60 examples
    st = np.load(out / "fleet" / "streams.npz")
    assert st["n_test"].tolist() == [15] * 8 and st["n_train"].tolist() == [45] * 8
    t = np.load(data)["time"]
    for k in range(8):
        assert t[st["test"][k]].min() > t[st["stream"][k, : st["n_train"][k]]].max()
    final = (out / "model_int8.tflite").read_bytes()
    assert read_tail(final).ops[0].kind == "SOFTMAX" and not read_head(final).equals(
        read_head(models["float_io"])
    )


def test_data_without_devices_is_partitioned_and_keras_models_are_converted(
    keras_file: Path, tmp_path: Path
) -> None:
    data = _device_data(tmp_path / "d.npz", ids=False)
    p = _scenario(tmp_path, keras_file, data, extra="", rounds=4)
    p.write_text(p.read_text().replace("tflite =", "keras =").replace("[fleet]\n", "[fleet]\ndevices = 10\n"))
    res = CliRunner().invoke(cli, ["run", str(p), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["devices"] == 10
    assert (
        0.5 < summary["base_model"]["float_accuracy_clean"] <= 1
        and 0.5 < summary["base_model"]["int8_accuracy_clean"]
    )


def test_generic_drift_on_recorded_data_and_resume(models: dict[str, bytes], tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(models["int8_reshape"])
    data = _device_data(tmp_path / "d.npz")
    drift = '[[drift]]\nat = 3\nfraction = 0.5\ngroup = "quiet"\ncondition = { gain = 0.3, snr_db = 5.0 }\n'
    p = _scenario(tmp_path, model, data, extra=drift, rounds=6)
    res = CliRunner().invoke(cli, ["run", str(p), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "o" / "fleet" / "layout.json").read_text())
    assert len(meta["conditions"]) == 2 and meta["conditions"][1]["gain"] == 0.3
    rows = (tmp_path / "o" / "rounds.csv").read_text().splitlines()
    assert len(rows) == 8
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "quiet" in summary["group_accuracy_final"]
    # a run killed after round 3 and resumed ends with exactly the rows of the uninterrupted one
    import csv

    from fedtiny.plan import load_scenario
    from fedtiny.runner import run_scenario

    out2 = tmp_path / "o2"
    with pytest.raises(KeyboardInterrupt):
        run_scenario(load_scenario(p), out2, log=lambda *_: None, stop_after=3)
    run_scenario(load_scenario(out2 / "scenario.resolved.toml"), out2, log=lambda *_: None, resume=True)

    def table(d: Path) -> list[dict[str, str]]:
        return [
            {k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader((d / "rounds.csv").open())
        ]

    assert table(out2) == table(tmp_path / "o")


@pytest.mark.parametrize(
    "bad,words",
    [
        ("shape", "the model takes"),
        ("labels", "unknown class"),
        ("missing", "file or folder not found"),
        ("label_shift", "needs a generated task"),
        ("task_knob", "is not a drift knob of recorded data"),
    ],
)
def test_bad_data_is_one_line_with_exit_2(
    models: dict[str, bytes], tmp_path: Path, bad: str, words: str
) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(models["float_io"])
    data = _device_data(tmp_path / "d.npz")
    extra = ""
    if bad == "shape":
        arrays = dict(np.load(data))
        arrays["x"] = arrays["x"][:, :7]
        np.savez(data, **arrays)
    elif bad == "labels":
        arrays = dict(np.load(data))
        arrays["classes"] = np.array(["a", "b", "c", "zebra"])
        np.savez(data, **arrays)
    elif bad == "missing":
        data = tmp_path / "nowhere.npz"
    elif bad == "label_shift":
        extra = '[[drift]]\nat = 2\nfraction = 0.5\ngroup = "g"\nkind = "label_shift"\n'
    elif bad == "task_knob":
        extra = '[[drift]]\nat = 2\nfraction = 0.5\ngroup = "g"\ncondition = { speed_hz = 20.0 }\n'
    p = _scenario(tmp_path, model, data, extra=extra)
    if bad == "labels":
        p.write_text(p.read_text().replace("[data]", 'classes = ["a", "b", "c", "d"]\n[data]'))
    res = CliRunner().invoke(cli, ["run", str(p), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("fedtiny: error")]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.output, res.output


def test_init_writes_a_scenario_that_runs(models: dict[str, bytes], tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(models["float_io"])
    arrays = dict(np.load(_device_data(tmp_path / "d.npz")))
    # class names in another order than the model's outputs: init matches them by what the model predicts
    perm = np.array([2, 0, 3, 1])
    arrays["classes"] = np.array(["a", "b", "c", "d"])[perm]
    arrays["y"] = np.argsort(perm)[arrays["y"]]
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "sub" / "scenario.toml"
    res = CliRunner().invoke(
        cli, ["init", "--model", str(model), "--data", str(tmp_path / "d.npz"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert 'classes = ["a", "b", "c", "d"]' in text and 'tflite = "../m.tflite"' in text
    assert (
        CliRunner()
        .invoke(cli, ["init", "--model", str(model), "--data", str(tmp_path / "d.npz"), "--out", str(out)])
        .exit_code
        == 2
    )  # no silent overwrite
    out.write_text(out.read_text() + '\n[runtime]\nengine = "inline"\n')
    res = CliRunner().invoke(cli, ["run", str(out), "--out", str(tmp_path / "o"), "--set", "rounds=3"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["initial_accuracy"] > 0.5  # the classes were matched to the right outputs


# -- a task of one's own, field trials, the worked example ----------------------------------------------------


def test_custom_task_from_a_module(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    p = tmp_path / "tone.toml"
    p.write_text(
        'name = "tone"\nrounds = 3\n[task]\nname = "examples.custom_task.tone_task:ToneTask"\n'
        "params = { base_hz = 2.0 }\n[model]\nfactory_samples = 400\ntest_samples = 100\nepochs = 3\n"
        "head_inputs = 16\n[fleet]\ndevices = 8\ndevices_per_gateway = 4\n"
        "condition = { gain = 0.5, noise = 0.4 }\n[[drift]]\nat = 2\nfraction = 0.5\n"
        'group = "noisy"\ncondition = { noise = 0.8 }\n[runtime]\nengine = "inline"\n'
    )
    import os

    cwd = os.getcwd()
    os.chdir(root)  # the module is found from the working directory
    try:
        res = CliRunner().invoke(cli, ["run", str(p), "--out", str(tmp_path / "o")])
        bad = CliRunner().invoke(
            cli, ["run", str(p), "--out", str(tmp_path / "o2"), "--set", "fleet.condition={noise=-1.0}"]
        )
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert (
        summary["task"] == "examples.custom_task.tone_task:ToneTask"
        and "noisy" in summary["group_accuracy_final"]
    )
    assert bad.exit_code == 2 and "noise" in bad.output  # the task's own knob ranges are checked


@pytest.mark.slow
def test_field_trial_replays_the_datas_devices_on_virtual_boards(
    models: dict[str, bytes], tmp_path: Path
) -> None:
    import subprocess
    import sys

    model = tmp_path / "m.tflite"
    model.write_bytes(models["float_io"])
    data = _device_data(tmp_path / "d.npz", devices=2, per_device=40)
    p = tmp_path / "field.toml"
    p.write_text(f'name = "f"\nseed = 2\nrounds = 1\n[model]\ntflite = "{model}"\n[data]\npath = "{data}"\n')
    out = tmp_path / "trial"
    r = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "trial", str(p), "--boards", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 boards replay the recordings of devices 100, 101" in r.stdout + r.stderr
    replay = np.load(out / "replay" / "device_1.npz")
    assert replay["train_feats_0"].shape == (30, 16) and replay["test_feats_0"].shape == (10, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["board_failures"] == 0 and len(summary["boards"]) == 2
    assert read_tail((out / "model_int8.tflite").read_bytes()).ops[0].kind == "SOFTMAX"


@pytest.mark.slow
def test_worked_example_plain_tensorflow_model_and_speaker_folders(tmp_path: Path) -> None:
    """examples/byom_kws: a user's KWS model (float I/O, SOFTMAX) and Speech Commands folders, one device per
    speaker, through `fedtiny info`, `fedtiny init` and the ready scenario scenarios/byom_kws.toml."""
    import shutil
    import subprocess
    import sys

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make test installs it: scripts/install-system-deps.sh)")
    root = Path(__file__).resolve().parent.parent
    build = tmp_path / "build"
    r = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "byom_kws" / "make_model_and_data.py"),
            "--out",
            str(build),
            "--reps",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    model, data = build / "model_int8.tflite", build / "data"
    info = CliRunner().invoke(cli, ["info", str(model)])
    assert (
        "FULLY_CONNECTED 48→8 → SOFTMAX → DEQUANTIZE" in info.output
        and "float32 [1, 49, 10, 1]" in info.output
    )
    init = CliRunner().invoke(
        cli, ["init", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "i.toml")]
    )
    assert init.exit_code == 0, init.output
    assert (
        'classes = ["yes", "no", "up", "down", "left", "right", "on", "off"]'
        in (tmp_path / "i.toml").read_text()
    )
    out = tmp_path / "o"
    res = CliRunner().invoke(
        cli,
        [
            "run",
            str(root / "scenarios" / "byom_kws.toml"),
            "--out",
            str(out),
            "--set",
            f'model.tflite="{model}"',
            "--set",
            f'data.path="{data}"',
            "--set",
            'runtime.engine="inline"',
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 12 and summary["base_model"]["int8_accuracy_clean"] > 0.3  # chance is 1/8
    assert set(summary["group_accuracy_final"]) >= {"quiet_mic"}


def test_a_users_tflite_on_a_reference_tasks_generator(models: dict[str, bytes], tmp_path: Path) -> None:
    """[model] tflite without [data]: the task generates the fleet's data for the user's model; the model is scored
    on the task's clean factory test set; a model whose input or classes do not fit the task is one line."""
    from fedtiny.model.build import convert_to_int8
    from fedtiny.tasks import get_task

    task = get_task("vibration")
    keras_model = task.build_model(head_inputs=16)
    rep = task.generate(np.arange(60) % task.num_classes, np.random.default_rng(0))
    model = tmp_path / "vib.tflite"
    model.write_bytes(convert_to_int8(keras_model, task.input_shape, rep))
    p = tmp_path / "s.toml"
    p.write_text(
        f'name = "u"\nrounds = 2\n[model]\ntflite = "{model}"\ntest_samples = 100\n[fleet]\ndevices = 6\n'
        'devices_per_gateway = 3\n[runtime]\nengine = "inline"\n'
    )
    res = CliRunner().invoke(cli, ["run", str(p), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    base = json.loads((tmp_path / "o" / "summary.json").read_text())["base_model"]
    assert base["head"] == "FULLY_CONNECTED 16→5" and 0 <= base["int8_accuracy_clean"] <= 1
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(models["float_io"])
    res = CliRunner().invoke(
        cli, ["run", str(p), "--out", str(tmp_path / "o2"), "--set", f'model.tflite="{wrong}"']
    )
    assert (
        res.exit_code == 2
        and "task 'vibration' gives [32, 32, 1]" in res.output
        and "Traceback" not in res.output
    )
