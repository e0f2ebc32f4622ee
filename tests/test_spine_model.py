"""Model pipeline: base model build and cache, int8 vs float accuracy, C header, info."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedtiny.errors import ModelError
from fedtiny.model.build import build_base_model
from fedtiny.model.export import c_header
from fedtiny.model.flatbuffer import op_names, read_head, write_head
from fedtiny.model.info import model_info
from fedtiny.plan import load_scenario
from fedtiny.plan.resolve import model_spec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quickstart_model():  # type: ignore[no-untyped-def]
    return build_base_model(
        model_spec(load_scenario(ROOT / "scenarios" / "quickstart.toml")), log=lambda *_: None
    )


def test_int8_base_model_is_close_to_float_and_fits_a_cortex_m4(quickstart_model) -> None:  # type: ignore[no-untyped-def]
    m = quickstart_model
    assert m.float_accuracy > 0.85
    assert abs(m.int8_accuracy - m.float_accuracy) <= 0.015
    info = model_info(m.tflite)
    assert info.bytes <= 100 * 1024 and 0 < info.arena_bytes <= 64 * 1024
    assert info.ops[-1] == "FULLY_CONNECTED" and (info.head_classes, info.head_features) == (5, 64)
    assert "SHAPE" not in info.ops and "STRIDED_SLICE" not in info.ops


def test_build_is_cached_by_content(quickstart_model) -> None:  # type: ignore[no-untyped-def]
    again = build_base_model(
        model_spec(load_scenario(ROOT / "scenarios" / "quickstart.toml")), log=lambda *_: None
    )
    assert again.path == quickstart_model.path and again.tflite == quickstart_model.tflite
    other = model_spec(load_scenario(ROOT / "scenarios" / "quickstart.toml", ["seed=99"]))
    assert other.key() != model_spec(load_scenario(ROOT / "scenarios" / "quickstart.toml")).key()


def test_write_head_checks_shape_and_touches_only_the_head(tiny_tflite: bytes) -> None:
    head = read_head(tiny_tflite)
    new = head.with_(weights=np.zeros_like(head.weights), output_zero_point=3)
    patched = write_head(tiny_tflite, new)
    diff = np.nonzero(np.frombuffer(patched, np.uint8) != np.frombuffer(tiny_tflite, np.uint8))[0]
    assert 0 < len(diff) <= head.weights.size + 16
    assert op_names(patched) == op_names(tiny_tflite)
    with pytest.raises(ModelError, match="does not match"):
        write_head(
            tiny_tflite,
            head.with_(weights=np.zeros((3, 64), np.int8), weight_scales=np.ones(3), bias=np.zeros(3)),
        )
    with pytest.raises(ModelError, match="TFL3"):
        read_head(b"not a model at all")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_c_header_compiles_and_holds_the_model(tmp_path: Path, tiny_tflite: bytes) -> None:
    (tmp_path / "model.h").write_text(c_header(tiny_tflite, "my_model"))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "model.h"\n'
        "int main(void){unsigned long s=0; for(unsigned i=0;i<MY_MODEL_LEN;i++) s+=my_model[i];"
        ' printf("%u %lu %u\\n", MY_MODEL_LEN, s, MY_MODEL_HEAD_CLASSES); return 0;}\n'
    )
    subprocess.run(
        ["cc", "-std=c99", "-Wall", "-Werror", "-o", str(tmp_path / "m"), str(tmp_path / "main.c")],
        check=True,
    )
    out = subprocess.run([str(tmp_path / "m")], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(tiny_tflite)), str(sum(tiny_tflite)), "5"]


def test_cli_info_and_export(tmp_path: Path, tiny_tflite: bytes) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_tflite)
    info = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "info", str(model)], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0, info.stderr
    assert "FULLY_CONNECTED 64→5" in info.stdout and "arena:" in info.stdout
    hdr = tmp_path / "out" / "m.h"
    exp = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "export", str(model), "--header", str(hdr)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exp.returncode == 0 and hdr.read_text().count("0x") == len(tiny_tflite)
    bad = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "info", str(tmp_path / "none.tflite")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_truncated_or_corrupt_model_is_a_clear_model_error(tiny_tflite: bytes) -> None:
    for bad in (tiny_tflite[:2000], b"xxxxTFL3" + bytes(8)):
        with pytest.raises(ModelError, match="corrupt or truncated"):
            read_head(bad)
