"""KWS task: espeak-ng speakers, clip cache, augmentation, MFCC shape, drift, model."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedtiny.errors import TaskError
from fedtiny.tasks import get_task
from fedtiny.tasks import kws as kws_mod

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="kws task needs espeak-ng (apt-get install espeak-ng)"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kws-cache")


@pytest.fixture(scope="module")
def task(cache: Path) -> kws_mod.KwsTask:
    return get_task("kws", speakers_per_group=2, cache=str(cache))  # type: ignore[return-value]


def test_missing_espeak_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    kws_mod.espeak_version.cache_clear()
    monkeypatch.setattr(kws_mod.shutil, "which", lambda name: None)
    try:
        with pytest.raises(TaskError, match=r"^kws task needs espeak-ng \(apt-get install espeak-ng\)$"):
            get_task("kws").generate(np.array([0]), np.random.default_rng(0))
    finally:
        kws_mod.espeak_version.cache_clear()


def test_attributes_and_groups() -> None:
    task = get_task("kws", speakers_per_group=4)
    assert task.classes[:10] == ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    assert task.classes[10:] == ("_silence_", "_unknown_")
    assert task.input_shape == (49, 10, 1)
    assert set(task.default_condition()) == set(task.drift_knobs) == {"speaker_group", "noise", "gain"}
    g0, g1 = task.speakers(0), task.speakers(1)  # type: ignore[attr-defined]
    assert len(g0) == 4 and not set(g0) & set(g1)
    assert g0 == get_task("kws", speakers_per_group=4).speakers(0)  # type: ignore[attr-defined]
    with pytest.raises(TaskError, match="speakers_per_group"):
        get_task("kws", speakers_per_group=0)


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDTINY_CACHE", str(tmp_path))
    assert kws_mod.cache_dir() == tmp_path / "kws"
    monkeypatch.delenv("FEDTINY_CACHE")
    assert kws_mod.cache_dir() == Path.home() / ".cache" / "fedtiny" / "kws"


@needs_espeak
def test_generate_shapes_determinism(task: kws_mod.KwsTask) -> None:
    labels = np.arange(24) % 12
    a = task.generate(labels, np.random.default_rng(0))
    assert a.shape == (24, 49, 10, 1) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, task.generate(labels, np.random.default_rng(0)))
    assert not np.allclose(a, task.generate(labels, np.random.default_rng(1)))
    # speech has an onset: the frame-to-frame spread of c0 is larger than in silence (noise only)
    spread = a[..., 0, 0].std(axis=1)
    assert spread[labels < 10].mean() > 1.5 * spread[labels == 10].mean()


@needs_espeak
def test_cache_is_used(task: kws_mod.KwsTask, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.array([0, 1, 11])
    a = task.generate(labels, np.random.default_rng(5))
    assert any(cache.glob("yes-*.npy"))

    def no_espeak(*args: object, **kwargs: object) -> None:
        raise AssertionError("espeak-ng called although the clips are cached")

    monkeypatch.setattr(subprocess, "Popen", no_espeak)
    fresh = get_task("kws", speakers_per_group=2, cache=str(cache))  # new instance: reads the disk cache
    np.testing.assert_array_equal(a, fresh.generate(labels, np.random.default_rng(5)))


@needs_espeak
def test_voice_clip_is_speech(cache: Path) -> None:
    clip = kws_mod.voice_clip(("en-us", "m3", 45, 150), "left", cache)
    assert clip.dtype == np.int16 and 2000 < len(clip) <= 16000
    assert np.abs(clip).max() > 3000


@needs_espeak
@pytest.mark.parametrize("cond", [{"speaker_group": 1.0}, {"noise": 0.05}, {"gain": 0.1}])
def test_drift_changes_inputs(task: kws_mod.KwsTask, cond: dict[str, float]) -> None:
    labels = np.arange(24) % 12
    base = task.generate(labels, np.random.default_rng(2))
    other = task.generate(labels, np.random.default_rng(3))
    drifted = task.generate(labels, np.random.default_rng(2), cond)
    assert np.abs(drifted - base).mean() > 0.2 * np.abs(other - base).mean()
    assert not np.allclose(drifted, base)


@needs_espeak
def test_condition_errors(task: kws_mod.KwsTask) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match="integer"):
        task.generate(np.array([0]), rng, {"speaker_group": 0.5})
    with pytest.raises(TaskError, match="speaker_group"):
        task.generate(np.array([0]), rng, {"speaker_group": 1e6})
    with pytest.raises(TaskError, match=r"unknown drift knob 'snr'.*gain, noise, speaker_group"):
        task.generate(np.array([0]), rng, {"snr": 10.0})


def test_model() -> None:
    pytest.importorskip("keras")
    model = get_task("kws").build_model()
    assert model.input_shape == (1, 49, 10, 1)
    assert model.output_shape == (1, 12)
    assert model.get_layer("head").kernel.shape == (64, 12)
    assert model.get_layer("features").output.shape[-1] == 64
    assert model.count_params() < 40_000
