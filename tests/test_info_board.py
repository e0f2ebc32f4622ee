"""`fedtiny info MODEL --board NAME` (issue 20 §2): the build options a model needs on a board, whether it fits the
board's RAM and flash, and the build command. The printed FT_DEFS of fedtiny's reference models build the host
firmware (one build: each option at its largest over the models), and that build accepts every model, as its factory
model (`--model`: the board boots on it) and uploaded as a full image (VERIFY OK, so the slot holds it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_firmware import BUILD, HostBoard, make
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.link.messages import ImageKind
from fedtiny.model.flatbuffer import model_io, read_head

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = sorted((ROOT / "fedtiny" / "model" / "reference").glob("*.tflite"))
DEFS = re.compile(r'FT_DEFS="([^"]*)"')


def info(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["info", *args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def planners() -> None:
    """The firmware's planners (portable and DSP kernels), so that the arena printed is the firmware's plan."""
    make("build/tools/ft_plan", "build/tools/ft_plan_dsp")


def ft_defs(out: str) -> dict[str, int]:
    m = DEFS.search(out)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"-D(\w+)=(\d+)", m.group(1))}


def test_reference_models_fit_nano33ble_and_say_how_to_build(planners: None) -> None:
    assert len(REFERENCE) >= 2
    for path in REFERENCE:
        code, out = info(str(path), "--board", "nano33ble")
        assert code == 0, out
        head = read_head(path.read_bytes())
        defs = ft_defs(out)
        assert defs["FT_MAX_CLASSES"] == head.num_classes and defs["FT_MAX_DIM"] == head.num_features
        assert defs["FT_SLOT_SIZE"] % 4096 == 0 and defs["FT_SLOT_SIZE"] >= path.stat().st_size
        assert "the firmware's arena plan with the DSP kernels" in out  # nano33ble: a Cortex-M4F
        assert "fits:     yes" in out and "RAM:      about" in out and "flash:    about" in out
        assert "make -C firmware" in out and f"FT_FACTORY_MODEL={path.resolve()}" in out
        assert "fedtiny_config.h in" not in out and "edit" not in out


@pytest.fixture(scope="module")
def reference_build(planners: None) -> Path:
    """The host firmware built with the printed FT_DEFS (each option at its largest over the reference models)."""
    merged: dict[str, int] = {}
    for path in REFERENCE:
        for k, v in ft_defs(info(str(path), "--board", "nano33ble")[1]).items():
            merged[k] = max(merged.get(k, 0), v)
    defs = " ".join(f"-D{k}={v}" for k, v in sorted(merged.items()))
    make(
        "B=build/info-board",
        "THIRD_PARTY=build/third_party",
        f"FT_DEFS={defs}",
        "build/info-board/host/fedtiny-fw",
    )
    return BUILD / "info-board" / "host" / "fedtiny-fw"


@pytest.mark.parametrize("path", REFERENCE, ids=[p.stem for p in REFERENCE])
def test_the_printed_build_accepts_the_model(reference_build: Path, path: Path, tmp_path: Path) -> None:
    model = path.read_bytes()
    head, io = read_head(model), model_io(model)
    b = HostBoard(
        tmp_path / "flash.bin", "--device-id", "3", "--model", str(path), exe=reference_build
    ).start()
    try:
        s = b.session()
        assert s.info is not None
        assert (s.info.C, s.info.D) == (head.num_classes, head.num_features)
        assert s.info.raw_input_len == int(np.prod(io.input_shape))
        st = s.upload(model, kind=ImageKind.TFLITE)  # the full image fits the sized slot ...
        assert st.received == len(model)
        s.verify(st.slot)  # ... and the sized interpreter and arena take it
        s.activate(st.slot)
        s.close()
    finally:
        b.stop()


def many_class_model(classes: int) -> bytes:
    pytest.importorskip("tensorflow")
    import keras

    from fedtiny.model.build import convert_to_int8

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    out = keras.layers.Dense(classes, name="head")(x)
    rep = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(np.float32)
    return convert_to_int8(keras.Model(inp, out), (8, 8, 1), rep)


def test_too_many_classes_for_the_boards_ram(tmp_path: Path) -> None:
    path = tmp_path / "wide.tflite"
    path.write_bytes(many_class_model(3000))
    code, out = info(str(path), "--board", "nano33ble")
    assert code == 1, out
    assert "fits:     no: needs about" in out, out
    assert "nano33ble has 256.0 KiB" in out and "the 3000x64 head alone costs about" in out
    assert "use fewer classes or features, or a board with more RAM" in out
    assert "build:" not in out
    # the model's own lines still come first, and without --board the command is as before (exit 0)
    code, out = info(str(path))
    assert code == 0 and "FT_DEFS=" in out and "fedtiny_config.h" not in out


def test_bad_model_path_or_unknown_board_exit_2(tmp_path: Path) -> None:
    code, out = info(str(tmp_path / "missing.tflite"), "--board", "nano33ble")
    assert code == 2 and "file not found" in out
    code, out = info(str(REFERENCE[0]), "--board", "arduino-uno")
    assert code == 2 and "unknown board 'arduino-uno'" in out and "nano33ble" in out
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    code, out = info(str(junk), "--board", "nano33ble")
    assert code == 2 and str(junk) in out


def test_fedtiny_fw_help(reference_build: Path) -> None:
    r = subprocess.run([str(reference_build), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    for opt in (
        "--tcp",
        "--pty",
        "--stdio",
        "--flash",
        "--model",
        "--trust-key",
        "--cut-at",
        "--device-key-file",
    ):
        assert f"  {opt}" in r.stdout, opt
    assert "FT_DEFS" in r.stdout and "exits 75" in r.stdout
    r = subprocess.run([str(reference_build), "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage: fedtiny-fw" in r.stderr and "--help" in r.stderr


def test_sizing_rules_camera_input_no_fpu_and_a_short_cache() -> None:
    """A raw input larger than a frame is staged (FT_MAX_STAGED_INPUT), a board without an FPU trains fixed point
    (FT_USE_FLOAT=0), and a board short of RAM gets the cache that fits (FT_CACHE_CAPACITY)."""
    from dataclasses import replace

    from fedtiny.fleet.boards import get_board
    from fedtiny.fleet.fit import board_fit
    from fedtiny.model.info import model_info

    mi = model_info(REFERENCE[0].read_bytes())
    camera = replace(mi, io=replace(mi.io, input_shape=(1, 96, 96, 3)))
    fit = board_fit(camera, get_board("rp2040"), 20_000, "test", 40, 12)
    assert fit.fits and fit.options["FT_MAX_STAGED_INPUT"] == 96 * 96 * 3
    assert "-DFT_MAX_STAGED_INPUT=27648" in fit.ft_defs() and "-DFT_USE_FLOAT=0" in fit.ft_defs()
    assert fit.ram["staged input"] == 27648 + 8
    fit = board_fit(mi, get_board("nano33ble"), 20_000, "test", 40, 12)
    assert "STAGED" not in fit.ft_defs() and "FT_USE_FLOAT" not in fit.ft_defs()
    big_arena = board_fit(mi, get_board("nano33ble"), 200 * 1024, "test", 40, 12)
    assert big_arena.fits and 16 <= big_arena.options["FT_CACHE_CAPACITY"] < 200
    assert big_arena.ram_bytes <= 256 * 1024 and "-DFT_CACHE_CAPACITY=" in big_arena.ft_defs()
