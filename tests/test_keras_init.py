"""`fedtiny init` takes a Keras model (issue 19 section 3), converting it as `fedtiny run` does, and TensorFlow's
output never reaches the console: not from `init`, not from a run's Keras conversion, not from a first run's base
model build (fedtiny/model/quiet.py).

The model is a tiny Keras classifier built here (seconds); the data an npz file of devices written here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli

C, D = 4, 12
#: what TensorFlow prints (C++ and Python) that must never reach the console
NOISE = (
    "Saved artifact at",
    "Captures:",
    "TensorSpec",
    "fully_quantize",
    "inference_type",
    "absl::InitializeLog",
    "port.cc",
    "oneDNN",
    "File not found",
    "Traceback",
)
#: some of it that lands in the log file
SOME_TF = ("port.cc", "Saved artifact at", "fully_quantize", "absl::InitializeLog")


def _protos() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(C, D)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``m.keras``, ``m.h5`` and ``d.npz`` (6 devices, 60 examples each) in one folder."""
    import keras

    d = tmp_path_factory.mktemp("keras_init")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, 800)
    x = _protos()[y] + 0.9 * rng.normal(size=(800, D)).astype(np.float32)
    inp = keras.Input((D,))
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(keras.layers.Dense(16, "relu")(inp))))
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    m.save(d / "m.keras")
    m.save(d / "m.h5")
    rng = np.random.default_rng(5)
    ys = rng.integers(0, C, 360)
    np.savez(
        d / "d.npz",
        x=(_protos()[ys] + 0.9 * rng.normal(size=(360, D))).astype(np.float32),
        y=ys,
        device=np.repeat(np.arange(6), 60),
        time=np.tile(np.arange(60, dtype=np.float64), 6),
        classes=np.array(["a", "b", "c", "d"]),
    )
    return d


def _quiet_console(text: str) -> None:
    for noise in NOISE:
        assert noise not in text, f"{noise!r} on the console:\n{text[-3000:]}"


def test_init_converts_a_keras_model_and_keeps_tensorflow_off_the_console(files: Path) -> None:
    out = files / "s.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "init", "--model", "m.keras", "--data", "d.npz"]
        + ["--out", out.name, "--no-probe", "--force"],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "0"},  # the worst case
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _quiet_console(proc.stdout + proc.stderr)
    said = [line for line in proc.stdout.splitlines() if "converted m.keras" in line]
    assert len(said) == 1, proc.stdout
    assert "full-integer int8" in said[0] and "s.init.log" in said[0] and "[model] keras" in said[0]
    log = (files / "s.init.log").read_text(errors="replace")
    assert any(s in log for s in SOME_TF), log[:2000]
    text = out.read_text()
    assert '\nkeras = "m.keras"' in text and "\ntflite =" not in text
    from fedtiny.plan import load_scenario

    s = load_scenario(out)
    assert s.model.keras and not s.model.tflite


def test_init_converts_exactly_as_the_run_does(files: Path) -> None:
    """The same int8 bytes: init's probes see the model the run deploys (the same seeded representative set)."""
    from fedtiny.fleet.user_data import load_user_model_and_data
    from fedtiny.init_scenario import write_scenario
    from fedtiny.plan import load_scenario
    from fedtiny.plan.resolve import fleet_spec

    out = files / "exact.toml"
    ins = write_scenario(files / "m.h5", files / "d.npz", out, seed=4, probe=False)
    assert (files / "exact.init.log").is_file()
    s = load_scenario(out)
    assert s.model.keras.endswith("m.h5")
    _, um = load_user_model_and_data(fleet_spec(s), s.model, lambda _: None)
    # the bytes differ only in tensor names (Keras numbers them per process): same head, same backbone outputs
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.model.runtime import Int8Runner

    a, b = read_head(um.tflite), read_head(ins.model.tflite)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    assert (a.input_scale, a.input_zero_point) == (b.input_scale, b.input_zero_point)
    assert (um.io.input_scale, um.io.input_zero_point) == (
        ins.model.io.input_scale,
        ins.model.io.input_zero_point,
    )
    x = np.load(files / "d.npz")["x"][:64]
    assert np.array_equal(Int8Runner(um.tflite).features(x), Int8Runner(ins.model.tflite).features(x))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cut.keras", b"half"),  # a truncated download
        ("bogus.keras", b"not a model at all"),
        ("bogus.h5", b"\x00" * 64),
        ("empty.keras", b""),
    ],
    ids=["truncated", "not-zip", "not-hdf5", "empty"],
)
def test_a_bad_keras_file_is_one_line_naming_it(
    files: Path, tmp_path: Path, name: str, content: bytes
) -> None:
    p = tmp_path / name
    whole = (files / "m.keras").read_bytes()
    p.write_bytes(whole[: len(whole) // 2] if content == b"half" else content)
    res = CliRunner().invoke(
        cli, ["init", "--model", str(p), "--data", str(files / "d.npz"), "--out", str(tmp_path / "s.toml")]
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fedtiny: error: {p}: "), res.output
    _quiet_console(res.output)
    assert not (tmp_path / "s.toml").exists()


def test_a_zip_that_is_no_keras_save_is_one_line_without_keras_file_not_found(
    files: Path, tmp_path: Path
) -> None:
    p = tmp_path / "other.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    res = CliRunner().invoke(
        cli, ["init", "--model", str(p), "--data", str(files / "d.npz"), "--out", str(tmp_path / "s.toml")]
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fedtiny: error: {p}: cannot load the Keras model"), lines
    _quiet_console(res.output)


def test_a_runs_conversion_and_base_model_build_write_tensorflow_to_the_runs_log(
    files: Path, tmp_path: Path
) -> None:
    """The run's driver logs to DIR/fedtiny.log through a FileHandler on the root logger (cli._log_to_file):
    TensorFlow's output goes there too, fedtiny's own lines stay on the console. A first run builds the base
    model (trained and converted here, a tiny spec); a Keras model is converted and scored in float."""
    code = textwrap.dedent(
        """
        import logging, sys
        import numpy as np
        from pathlib import Path
        logging.getLogger().addHandler(logging.FileHandler(sys.argv[1]))
        from fedtiny.model.build import ModelSpec, build_base_model
        spec = ModelSpec(task="digits", factory_samples=64, test_samples=32, epochs=1, representative_samples=16)
        build_base_model(spec, print)
        from fedtiny.model.user import convert_keras
        rep = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
        um = convert_keras(sys.argv[2], rep, print)
        assert um.float_predict is not None
        um.float_predict(rep)
        print("done")
        """
    )
    log = tmp_path / "fedtiny.log"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(log), str(files / "m.keras")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FEDTINY_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    console = proc.stdout + proc.stderr
    _quiet_console(console)
    assert "base model: float accuracy" in proc.stdout and "model: converted m.keras" in proc.stdout
    assert proc.stdout.rstrip().endswith("done")
    text = log.read_text(errors="replace")
    for s in ("Saved artifact at", "fully_quantize", "port.cc"):
        assert s in text, text[:3000]
