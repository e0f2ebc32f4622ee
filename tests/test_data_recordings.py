"""A user's recordings: npz, class folders (Speech Commands layout) and csv, on small files in tmp_path."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from fedtiny import DataError
from fedtiny.data import detect_format, load_background, load_recordings


def write_wav(path: Path, x: np.ndarray, rate: int = 16_000, width: int = 2, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(np.repeat(x[:, None], channels, axis=1), -1, 1)
    pcm = {
        1: lambda v: (v * 127 + 128).astype(np.uint8),
        2: lambda v: (v * 32767).astype("<i2"),
        4: lambda v: (v * 2147483647).astype("<i4"),
    }[width](x)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def tone(freq: float, n: int = 16_000, rate: int = 16_000) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate)


@pytest.fixture()
def speech(tmp_path: Path) -> Path:
    """Speech Commands layout: 3 words x 3 speakers, background noise, validation/testing lists."""
    root = tmp_path / "sc"
    for wi, word in enumerate(["yes", "no", "up"]):
        for spk in ["aa11", "bb22", "cc33"]:
            write_wav(root / word / f"{spk}_nohash_0.wav", tone(300 + 100 * wi))
    write_wav(root / "up" / "aa11_nohash_1.wav", tone(500, 8_000, 8_000), rate=8_000)  # resampled
    write_wav(
        root / "_background_noise_" / "white.wav", 0.1 * np.random.default_rng(0).standard_normal(32_000)
    )
    (root / "_background_noise_" / "README.md").write_text("not a clip")
    (root / ".hidden").mkdir()
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc33_nohash_0.wav\n")
    return root


def test_folders_speech_commands_layout(speech: Path) -> None:
    rec = load_recordings(speech)
    assert rec.classes == ("no", "up", "yes")  # sorted folder names, _background_noise_ and .hidden left out
    assert len(rec) == 10 and rec.y.dtype == np.int64
    assert np.bincount(rec.y).tolist() == [3, 4, 3]
    assert rec.sample_rate == 16_000  # the most common rate; the 8 kHz file is resampled to it
    i = rec.sources.index("up/aa11_nohash_1.wav")
    assert len(rec.raw[i]) == 16_000 and rec.raw[i].dtype == np.float32
    assert rec.device_names == ("aa11", "bb22", "cc33")
    assert (
        rec.device is not None
        and rec.device_names[rec.device[rec.sources.index("no/cc33_nohash_0.wav")]] == "cc33"
    )
    assert rec.split is not None
    split = dict(zip(rec.sources, rec.split.tolist(), strict=True))
    assert split["yes/bb22_nohash_0.wav"] == "validation" and split["no/bb22_nohash_0.wav"] == "validation"
    assert split["yes/cc33_nohash_0.wav"] == "testing" and split["up/cc33_nohash_0.wav"] == "train"
    assert len(rec.background) == 1 and len(rec.background[0]) == 32_000
    assert rec.time is None and not rec.is_int8


def test_folders_model_classes_and_subset(speech: Path) -> None:
    rec = load_recordings(speech, classes=["yes", "no", "up", "_unknown_"])
    assert rec.classes == ("yes", "no", "up", "_unknown_")
    assert all(rec.classes[y] == s.split("/")[0] for y, s in zip(rec.y, rec.sources, strict=True))
    with pytest.raises(DataError, match=r"sc/up: unknown class 'up' \(expected one of yes, no\)"):
        load_recordings(speech, classes=["yes", "no"])
    a = load_recordings(speech, max_per_class=2, seed=1)
    b = load_recordings(speech, max_per_class=2, seed=1)
    assert a.sources == b.sources and np.bincount(a.y).tolist() == [2, 2, 2]
    assert a.sources == sorted(a.sources)  # file order kept
    assert {tuple(load_recordings(speech, max_per_class=1, seed=s).sources) for s in range(8)} != {
        tuple(a.sources)
    }


def test_folders_wav_widths_npy_csv_and_no_devices(tmp_path: Path) -> None:
    write_wav(tmp_path / "a" / "u8.wav", tone(200), width=1)
    write_wav(tmp_path / "a" / "s32.wav", tone(200), width=4)
    write_wav(tmp_path / "a" / "stereo.wav", tone(200), channels=2)
    _npy(tmp_path / "b" / "x.npy", np.arange(6.0).reshape(3, 2))
    (tmp_path / "b" / "sig.csv").write_text("value\n1\n2\n3\n")
    rec = load_recordings(tmp_path)
    assert rec.classes == ("a", "b") and rec.device is None and rec.split is None
    for s in rec.sources[:3]:
        np.testing.assert_allclose(rec.raw[rec.sources.index(s)], tone(200), atol=2e-2)  # 8-bit: 1/128 steps
    assert rec.raw[rec.sources.index("b/sig.csv")].tolist() == [1, 2, 3]
    assert rec.raw[rec.sources.index("b/x.npy")].shape == (3, 2)
    assert load_background(tmp_path / "a", 8_000)[0].shape == (8_000,)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda r: (r / "a").mkdir(), r"/a: empty class folder"),
        (lambda r: (r / "_x").mkdir(), r": no class folders"),
        (
            lambda r: _file(r / "a" / "bad.wav", b"RIFF\x00garbage" * 10),
            r"/a/bad.wav: not a readable PCM WAV",
        ),
        (lambda r: _file(r / "a" / "bad.wav", b""), r"/a/bad.wav: not a readable PCM WAV"),
        (lambda r: _npy(r / "a" / "n.npy", np.array([1.0, np.nan])), r"/a/n.npy: NaN or Inf at index \(1,\)"),
        (lambda r: _file(r / "a" / "n.npy", b"\x93NUMPY garbage"), r"/a/n.npy: not a readable .npy"),
        (lambda r: _file(r / "a" / "s.csv", b"1\n2\nx\n"), r"/a/s.csv:3: column '0' holds 'x'"),
        (lambda r: _file(r / "a" / "s.csv", bytes(range(256))), r"/a/s.csv: binary data"),
        (
            lambda r: _bad_background(r),
            r"/_background_noise_/b.npy: background clip has shape \(2, 2\)",
        ),
    ],
)
def test_folders_malformed(tmp_path: Path, setup: object, match: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(DataError, match=match) as e:
        load_recordings(tmp_path, "folders")
    assert str(e.value).startswith(str(tmp_path)) and "\n" not in str(e.value)


def _file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _bad_background(root: Path) -> None:
    _npy(root / "a" / "x.npy", np.ones(3))
    _npy(root / "_background_noise_" / "b.npy", np.ones((2, 2)))


def _npy(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x)


def test_npz_fields_and_class_mapping(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float64)
    np.savez(path, x=x, y=[0, 1, 2, 0, 1, 2], device=["b", "a", "b", "c", "a", "b"], time=[5, 4, 3, 2, 1, 0],
             classes=["cat", "dog", "eel"], split=["train"] * 4 + ["testing"] * 2)  # fmt: skip
    rec = load_recordings(path)
    assert rec.raw.dtype == np.float32 and rec.raw.shape == (6, 4, 3)  # type: ignore[union-attr]
    assert rec.classes == ("cat", "dog", "eel") and rec.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert (
        rec.device_names == ("a", "b", "c")
        and rec.device is not None
        and rec.device.tolist() == [1, 0, 1, 2, 0, 1]
    )
    assert rec.time is not None and rec.time.dtype == np.float64 and rec.time.tolist() == [5, 4, 3, 2, 1, 0]
    assert rec.split is not None and rec.split.tolist()[-1] == "testing"
    assert rec.sources[2] == "d.npz[2]" and detect_format(path) == "npz"
    mapped = load_recordings(path, classes=["eel", "cat", "dog", "fox"])
    assert mapped.classes == ("eel", "cat", "dog", "fox") and mapped.y.tolist() == [1, 2, 0, 1, 2, 0]
    with pytest.raises(DataError, match=r"d.npz: unknown class 'eel' \(expected one of cat, dog\)"):
        load_recordings(path, classes=["cat", "dog"])
    q = tmp_path / "q.npz"
    np.savez(q, x=np.arange(-4, 4, dtype=np.int8).reshape(2, 4), y=np.array([1, 0]), device=[7, 3])
    rec = load_recordings(q, classes=["a", "b"])
    assert rec.is_int8 and rec.raw.dtype == np.int8 and rec.classes == ("a", "b")  # type: ignore[union-attr]
    assert rec.device_names == ("3", "7") and rec.device is not None and rec.device.tolist() == [1, 0]
    assert load_recordings(q).classes == ("0", "1")
    names = tmp_path / "names.npz"
    np.savez(names, x=np.zeros((3, 2)), y=np.array(["up", "down", "up"]))
    assert load_recordings(names, classes=["down", "up"]).y.tolist() == [1, 0, 1]
    with pytest.raises(
        DataError, match=r"names.npz: unknown label 'up' of example 0 \(expected one of down, left\)"
    ):
        load_recordings(names, classes=["down", "left"])


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": [0]}, r"missing array 'x' \(arrays found: y;"),
        ({"x": np.zeros((2, 3))}, r"missing array 'y'"),
        ({"x": np.zeros((2, 3)), "y": [0, 1, 1]}, r"y has shape \(3,\) but x has 2 examples"),
        ({"x": np.array([[0.0, np.nan]]), "y": [0]}, r"x: NaN or Inf at index \(0, 1\)"),
        ({"x": np.array([[0.0, np.inf]]), "y": [0]}, r"NaN or Inf"),
        ({"x": np.zeros((2, 3)), "y": [0.5, 1.0]}, r"label 0.5 of example 0 is not an integer"),
        ({"x": np.zeros((2, 3)), "y": [0, -2]}, r"label -2 of example 1 is negative"),
        (
            {"x": np.zeros((2, 3)), "y": [0, 2], "classes": ["a", "b"]},
            r"label 2 of example 1 is >= the number",
        ),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0, int)}, r"x holds no examples"),
        ({"x": np.zeros((2, 3)), "y": [0, 1], "time": [1.0]}, r"time has shape \(1,\)"),
        ({"x": np.zeros((2, 3)), "y": [0, 1], "split": ["train", "dev"]}, r"unknown split 'dev'"),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict[str, object], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=match) as e:
        load_recordings(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"", "empty file"), (b"x,y\n1,2\n", "not a zip archive"), (bytes(range(256)), "not a zip")],
)
def test_npz_not_an_archive(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"bad.npz: {match}"):
        load_recordings(path)


def test_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "s0,label,device,time,s1,s2\n"
        "0.1,cat,dev7,2024-01-01T00:00:10,0.2,0.3\n"
        "\n"
        "1e-3,dog,dev2,2024-01-01T00:00:00,-1,2\n"
        "4,cat,dev7,2024-01-01T00:00:05, 5 ,6\n"
    )
    rec = load_recordings(path)
    assert isinstance(rec.raw, np.ndarray) and rec.raw.dtype == np.float32
    assert np.allclose(rec.raw, [[0.1, 0.2, 0.3], [1e-3, -1.0, 2.0], [4.0, 5.0, 6.0]])
    assert rec.classes == ("cat", "dog") and rec.y.tolist() == [0, 1, 0]
    assert (
        rec.device_names == ("dev2", "dev7") and rec.device is not None and rec.device.tolist() == [1, 0, 1]
    )
    assert rec.time is not None and (rec.time - rec.time[1]).tolist() == [
        10.0,
        0.0,
        5.0,
    ]  # ISO 8601 -> seconds
    assert rec.sources == ["d.csv:2", "d.csv:4", "d.csv:5"] and detect_format(path) == "csv"
    assert load_recordings(path, classes=["dog", "cat"]).y.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"d.csv: unknown label 'cat' on line 2 \(expected one of dog, eel\)"):
        load_recordings(path, classes=["dog", "eel"])
    sub = load_recordings(path, max_per_class=1, seed=0)
    assert len(sub) == 2 and sorted(sub.y.tolist()) == [0, 1]


def test_csv_numeric_labels_and_index_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("0.5,0.25,1\n0.1,0.2,0\n")  # no header: the label is column 2
    rec = load_recordings(path, label_column="2")
    assert rec.y.tolist() == [1, 0] and rec.classes == ("0", "1") and rec.device is None and rec.time is None
    assert np.allclose(rec.raw, [[0.5, 0.25], [0.1, 0.2]])
    assert load_recordings(path, label_column="2", classes=["a", "b", "c"]).classes == ("a", "b", "c")
    with pytest.raises(DataError, match=r"n.csv: label 1 on line 1 is >= the number of classes 1"):
        load_recordings(path, label_column="2", classes=["a"])


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a,b,c\n1,2,3\n", {}, r"t.csv: no label column 'label' \(columns found: a, b, c\)"),
        (
            "label,a,b\nx,1,2\ny,1,oops\n",
            {},
            r"t.csv:3: column 'b' holds 'oops' \(expected a finite number\)",
        ),
        ("label,a,b\nx,1,nan\n", {}, r"t.csv:2: column 'b' holds 'nan'"),
        ("label,a,b\nx,1,2\ny,1\n", {}, r"t.csv:3: 2 columns, expected 3"),
        ("label,a\n", {}, r"t.csv: no data rows"),
        ("label\nx\n", {}, r"t.csv: no signal columns"),
        ("label,time,a\nx,yesterday,1\n", {}, r"time 'yesterday' of example 0 is neither"),
        ("label,a\n,1\n", {}, r"t.csv: no labelled examples"),  # an empty label: no label
    ],
)
def test_csv_malformed(tmp_path: Path, text: str, kwargs: dict[str, str], match: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        load_recordings(path, **kwargs)  # type: ignore[arg-type]
    assert str(e.value).startswith(str(path))


@pytest.mark.parametrize("data", [bytes(range(256)) * 4, b"\xff\xfe\xfa label,a\n", b"   \n", b",,,\n,,\n"])
def test_csv_garbage(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "g.csv"
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"g.csv: (binary data|not a UTF-8|empty file|no values)"):
        load_recordings(path)


def test_detect_format_refusals(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "folders"
    with pytest.raises(DataError, match=r"missing.npz: not found"):
        load_recordings(tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"x.txt: unknown data format"):
        load_recordings(tmp_path / "x.txt")
    (tmp_path / "d.csv").write_text("label,a\nx,1\n")
    with pytest.raises(DataError, match=r"d.csv: format folders expects a folder of class folders"):
        load_recordings(tmp_path / "d.csv", "folders")
    with pytest.raises(DataError, match=r": format npz expects a .npz file"):
        load_recordings(tmp_path, "npz")
    with pytest.raises(DataError, match=r"unknown format 'parquet'"):
        load_recordings(tmp_path, "parquet")
    with pytest.raises(DataError, match=r"nowhere: background folder not found"):
        load_background(tmp_path / "nowhere")
