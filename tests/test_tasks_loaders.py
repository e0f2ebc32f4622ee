"""Loaders for the Speech Commands folder layout and CWRU .mat files, on tiny generated fixtures."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fedtiny.errors import TaskError
from fedtiny.tasks import get_task
from fedtiny.tasks.audio import mfcc
from fedtiny.tasks.loaders import load_cwru, load_speech_commands
from fedtiny.tasks.vibration import front_end


def write_wav(path: Path, x: np.ndarray, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture()
def speech_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    for wi, word in enumerate(["yes", "no", "cat", "dog"]):
        for k in range(3):
            write_wav(
                tmp_path / word / f"spk{k}_nohash_0.wav", 0.3 * np.sin(2 * np.pi * (300 + 100 * wi) * t)
            )
    write_wav(tmp_path / "yes" / "short_nohash_0.wav", 0.3 * rng.standard_normal(8000), rate=16_000)
    write_wav(tmp_path / "_background_noise_" / "white.wav", 0.1 * rng.standard_normal(48_000))
    (tmp_path / "validation_list.txt").write_text("yes/spk1_nohash_0.wav\nno/spk1_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text(
        "yes/spk2_nohash_0.wav\nno/spk2_nohash_0.wav\ncat/spk2_nohash_0.wav\n"
    )
    return tmp_path


def test_speech_commands_splits(speech_root: Path) -> None:
    d = load_speech_commands(speech_root, keywords=("yes", "no"), split="train")
    assert d.classes == ("yes", "no", "_silence_", "_unknown_")
    assert d.x.shape[1:] == (49, 10, 1) and d.x.dtype == np.float32
    counts = np.bincount(d.y, minlength=4)
    assert counts[0] == 2 and counts[1] == 1  # yes: spk0 + short; no: spk0
    assert counts[3] == 2 and counts[2] == 2  # unknown and silence default to the mean keyword count
    assert "yes/short_nohash_0.wav" in d.sources
    assert not any(
        "spk1" in s or "spk2" in s for s in d.sources if not s.startswith("cat") and not s.startswith("dog")
    )
    test = load_speech_commands(speech_root, keywords=("yes", "no"), split="testing", silence_count=0)
    assert sorted(test.sources) == ["cat/spk2_nohash_0.wav", "no/spk2_nohash_0.wav", "yes/spk2_nohash_0.wav"]
    assert test.y.tolist() == [0, 1, 3]


def test_speech_commands_features_match_kws_front_end(speech_root: Path) -> None:
    d = load_speech_commands(
        speech_root, keywords=("yes", "no"), split="all", silence_count=0, unknown_count=0
    )
    i = d.sources.index("no/spk0_nohash_0.wav")
    t = np.arange(16_000) / 16_000
    pcm = (0.3 * np.sin(2 * np.pi * 400 * t) * 32767).astype("<i2")  # as write_wav stored it
    ref = mfcc(pcm[None].astype(np.float32) / 32768)
    np.testing.assert_allclose(d.x[i], ref[0], atol=1e-3)
    short = d.x[d.sources.index("yes/short_nohash_0.wav")]
    assert np.allclose(short[-10:], short[-1])  # padded with silence to 1 s
    assert get_task("kws").input_shape == d.x.shape[1:]


def test_speech_commands_errors(speech_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="not a directory"):
        load_speech_commands(tmp_path / "missing")
    with pytest.raises(TaskError, match=r"folder .*up.* for keyword 'up' not found"):
        load_speech_commands(speech_root, keywords=("yes", "up"))
    (speech_root / "testing_list.txt").unlink()
    with pytest.raises(TaskError, match="testing_list.txt"):
        load_speech_commands(speech_root, keywords=("yes",), split="testing")
    with pytest.raises(TaskError, match="_background_noise_"):
        import shutil

        shutil.rmtree(speech_root / "_background_noise_")
        load_speech_commands(speech_root, keywords=("yes",), split="all")


def test_cwru_file_and_dir(tmp_path: Path) -> None:
    task = get_task("vibration")
    rng = np.random.default_rng(0)
    raw_or = task.raw(np.full(3, 2), rng).ravel().astype(np.float64)  # 3 windows of outer race
    raw_n = task.raw(np.full(2, 0), rng).ravel().astype(np.float64)
    scipy.io.savemat(tmp_path / "130.mat", {"X130_DE_time": raw_or[:, None], "X130_FE_time": raw_or[:, None]})
    scipy.io.savemat(tmp_path / "97.mat", {"X097_DE_time": raw_n[:, None], "X097RPM": np.array([[1796]])})
    one = load_cwru(tmp_path / "130.mat")
    assert one.x.shape == (3, 32, 32, 1)
    assert one.y.tolist() == [2, 2, 2] and one.classes[2] == "outer_race"
    np.testing.assert_allclose(one.x, front_end(raw_or.reshape(3, -1).astype(np.float32)), atol=1e-5)
    both = load_cwru(tmp_path, max_windows=2)
    assert both.y.tolist() == [2, 2, 0, 0]
    assert np.isnan(both.rpm[0]) and both.rpm[-1] == 1796
    assert load_cwru(tmp_path / "130.mat", hop=2048).x.shape[0] == 5  # overlapping windows
    x24 = load_cwru(tmp_path / "130.mat", fs=24_000)  # resampled to 12 kHz: half the samples
    assert x24.x.shape == (1, 32, 32, 1)


def test_cwru_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="not found"):
        load_cwru(tmp_path / "nope.mat")
    with pytest.raises(TaskError, match="no .mat files"):
        load_cwru(tmp_path)
    scipy.io.savemat(tmp_path / "130.mat", {"X130_FE_time": np.zeros((5000, 1))})
    with pytest.raises(
        TaskError, match=r"130.mat has no variable X<nnn>_DE_time \(variables: X130_FE_time\)"
    ):
        load_cwru(tmp_path / "130.mat")
    scipy.io.savemat(tmp_path / "999.mat", {"X999_DE_time": np.zeros((5000, 1))})
    with pytest.raises(TaskError, match="pass label="):
        load_cwru(tmp_path / "999.mat")
    assert load_cwru(tmp_path / "999.mat", label="ball").y.tolist() == [3]
    with pytest.raises(TaskError, match="label must be one of"):
        load_cwru(tmp_path / "999.mat", label="cracked")
