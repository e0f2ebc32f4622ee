"""Shipped reference base models: every ready scenario gets the same bits on any machine (no TensorFlow), a
damaged file is refused, and a rebuild of the quickstart's model still reaches the shipped accuracy."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedtiny.errors import ModelError
from fedtiny.model import build
from fedtiny.model.build import REFERENCE_DIR, build_base_model, factory_data, shipped_model
from fedtiny.model.runtime import Int8Runner
from fedtiny.plan import load_scenario
from fedtiny.plan.resolve import model_spec as model_spec_of

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"


def _ready_scenarios() -> list[Path]:
    """scenarios/*.toml on a reference task (no user model or data)."""
    out = []
    for f in sorted((ROOT / "scenarios").glob("*.toml")):
        raw = tomllib.loads(f.read_text())
        if not ({"tflite", "keras"} & set(raw.get("model", {})) or raw.get("data", {}).get("path")):
            out.append(f)
    return out


def _no_training(*_: object, **__: object) -> None:
    raise AssertionError("trained a model: TensorFlow must not be needed for a shipped spec")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEDTINY_CACHE", str(cache))
    monkeypatch.setattr(build, "train_and_convert", _no_training)
    return cache


def test_ready_scenarios_are_known() -> None:
    names = {f.stem for f in _ready_scenarios()}
    assert {"quickstart", "field_trial", "vibration_fleet_10k", "fleet_1m", "kws_new_speakers"} <= names
    assert "byom_kws" not in names


@pytest.mark.parametrize("scenario", _ready_scenarios(), ids=lambda p: p.stem)
def test_every_ready_scenario_gets_its_shipped_model(scenario: Path, empty_cache: Path) -> None:
    spec = model_spec_of(load_scenario(scenario))
    lines: list[str] = []
    m = build_base_model(spec, log=lines.append)
    meta = json.loads(m.path.with_suffix(".json").read_text())
    assert m.path.parent == REFERENCE_DIR and m.tflite == m.path.read_bytes()
    assert hashlib.sha256(m.tflite).hexdigest() == meta["sha256"] and len(m.tflite) == meta["bytes"]
    assert meta["spec"] == spec.fields() and scenario.stem in meta["scenarios"]
    assert 25_000 <= len(m.tflite) <= 60_000
    assert len(lines) == 1 and "shipped reference model" in lines[0]
    assert not (empty_cache / "models").exists()  # neither trained nor cached
    # the int8 accuracy in the meta is what TFLite Micro (integer kernels, no TensorFlow) measures here
    xt, yt = factory_data(spec, spec.test_samples, 1)
    assert float((Int8Runner(m.tflite, "tflm").predict(xt) == yt).mean()) == meta["int8_accuracy"]


def test_shipped_model_loads_without_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from fedtiny.plan import load_scenario; from fedtiny.plan.resolve import model_spec as model_spec_of;"
        "from fedtiny.model.build import build_base_model;"
        f"m = build_base_model(model_spec_of(load_scenario({str(QUICKSTART)!r})), log=lambda *_: None);"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print(len(m.tflite))"
    )
    env = {"FEDTINY_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) == len(shipped_model(model_spec_of(load_scenario(QUICKSTART))).tflite)  # type: ignore[union-attr]


def test_shipped_model_is_preferred_over_a_cached_one(empty_cache: Path) -> None:
    spec = model_spec_of(load_scenario(QUICKSTART))
    stale = empty_cache / "models" / spec.key()
    stale.mkdir(parents=True)
    (stale / "model_int8.tflite").write_bytes(b"a model trained on another CPU")
    (stale / "meta.json").write_text(json.dumps({"float_accuracy": 0.5, "int8_accuracy": 0.5}))
    m = build_base_model(spec, log=lambda *_: None)
    assert m.path.parent == REFERENCE_DIR and m.int8_accuracy == m.meta["int8_accuracy"] != 0.5


def test_a_damaged_shipped_model_is_refused(
    tmp_path: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE_DIR, copy)
    spec = model_spec_of(load_scenario(QUICKSTART))
    name = shipped_model(spec).path.name  # type: ignore[union-attr]
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (copy / name).write_bytes(bytes(data))
    monkeypatch.setattr(build, "REFERENCE_DIR", copy)
    with pytest.raises(ModelError, match=rf"{name}: shipped reference model is damaged \(sha256"):
        build_base_model(spec, log=lambda *_: None)
    (copy / name).unlink()  # the base64 copy stands in for a missing .tflite (a Flower App package)...
    assert build_base_model(spec, log=lambda *_: None).tflite == (REFERENCE_DIR / name).read_bytes()
    text = json.loads((copy / f"{name}.json").read_text())
    text["base64"] = text["base64"][:-8] + "AAAAAAA="  # ...and is checked like the file
    (copy / f"{name}.json").write_text(json.dumps(text))
    with pytest.raises(ModelError, match="shipped reference model is damaged"):
        build_base_model(spec, log=lambda *_: None)
    (copy / f"{name}.json").unlink()
    with pytest.raises(ModelError, match="shipped reference model unreadable"):
        build_base_model(spec, log=lambda *_: None)
    assert not (empty_cache / "models").exists()  # refused, not retrained


def test_every_shipped_model_has_its_text_copy_for_flower_app_packages() -> None:
    """`flwr run .` packages only text files (Flower's FAB include rules): each .tflite has a base64 copy."""
    models = sorted(REFERENCE_DIR.glob("*.tflite"))
    assert models
    for m in models:
        copy = json.loads((REFERENCE_DIR / f"{m.name}.json").read_text())
        assert base64.b64decode(copy["base64"]) == m.read_bytes()
        assert copy["sha256"] == hashlib.sha256(m.read_bytes()).hexdigest()


def test_a_changed_spec_is_trained_and_cached(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for override in ("seed=99", "model.epochs=11", "model.factory_samples=2000"):
        assert shipped_model(model_spec_of(load_scenario(QUICKSTART, [override]))) is None
    spec = model_spec_of(load_scenario(QUICKSTART, ["seed=99"]))
    built: list[object] = []

    def fake_build(s: object, log: object) -> tuple[bytes, dict[str, float]]:  # stands in for TensorFlow
        built.append(s)
        return b"trained here", {"float_accuracy": 0.9, "int8_accuracy": 0.9}

    monkeypatch.setattr(build, "build_entry", fake_build)
    first = build_base_model(spec, log=lambda *_: None)
    again = build_base_model(spec, log=lambda *_: None)
    assert built == [spec] and first.tflite == again.tflite == b"trained here"
    assert first.path == again.path == empty_cache / "models" / spec.key()


@pytest.mark.slow
def test_rebuild_of_the_quickstart_model_reaches_the_shipped_accuracy() -> None:
    """A rebuild (TensorFlow training and conversion) may differ in its bytes on another CPU; its int8 accuracy
    must be within 3 points of the shipped model's (the script's --check margin)."""
    script = ROOT / "scripts" / "build_reference_models.py"
    r = subprocess.run(
        [sys.executable, str(script), "--check", "--only", "quickstart"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "(field_trial, quickstart): int8 0." in r.stdout and "margin 0.03" in r.stdout
