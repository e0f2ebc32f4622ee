"""Reader for one folder per class of ``.wav``, ``.npy`` or ``.csv`` signals (Speech Commands layout included).

``_background_noise_`` holds background clips (not a class), ``_unlabelled`` examples without a label (label -1,
not a class); ``validation_list.txt`` / ``testing_list.txt``
give splits by relative path; the part of a file name before ``_nohash_`` is the speaker (device).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedtiny.data._common import RawData, check_finite, subset_per_class
from fedtiny.data._npz_csv import csv_rows, parse_numbers
from fedtiny.errors import DataError, TaskError
from fedtiny.tasks.audio import read_wav, resample

SUFFIXES = (".wav", ".npy", ".csv")
BACKGROUND = "_background_noise_"
UNLABELLED = ("_unlabelled", "_unlabeled")  # examples without a label (label -1), either spelling
LISTS = {"validation": "validation_list.txt", "testing": "testing_list.txt"}


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
    )


def read_signal(path: Path) -> tuple[np.ndarray, int | None]:
    """float32 signal of one file and its sample rate (WAV only; None for .npy / .csv)."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        try:
            x, rate = read_wav(path)
        except (TaskError, ValueError, EOFError, OSError) as e:
            reason = str(e).rsplit(": ", 1)[-1]
            raise DataError(
                f"{path}: not a readable PCM WAV file ({reason}; expected 8/16/32-bit PCM)"
            ) from None
        if len(x) == 0:
            raise DataError(f"{path}: WAV file holds no samples")
        return x, rate
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)  # never pickle: the files are untrusted
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "iuf" or x.size == 0:
            raise DataError(f"{path}: expected a non-empty numeric array, got {getattr(x, 'dtype', type(x))}")
        check_finite(str(path), x)
        return np.asarray(x, dtype=np.float32), None
    rows = csv_rows(path)
    if not any(_numeric(c) for c in rows[0][1]):  # a header row
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: no numbers (expected one signal: a column or a row of numbers)")
    width = len(rows[0][1])
    values = []
    for line, cells in rows:
        if len(cells) != width:
            raise DataError(f"{path}:{line}: {len(cells)} columns, expected {width} as in the first row")
        values.append(parse_numbers(path, line, cells, [str(i) for i in range(width)]))
    sig = np.array(values, dtype=np.float32)
    return (sig.ravel() if 1 in sig.shape else sig), None


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_folders(root: Path, classes: Sequence[str], max_per_class: int, seed: int) -> RawData:
    """Every class folder's files (a seeded subset of ``max_per_class`` each) and those of ``_unlabelled`` (label
    -1), WAVs at their most common rate."""
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not dirs:
        raise DataError(
            f"{root}: no class folders (expected one folder per class of .wav, .npy or .csv files)"
        )
    for d in dirs:  # fail before reading thousands of files
        if classes and d.name not in classes:
            raise DataError(f"{d}: unknown class {d.name!r} (expected one of {', '.join(classes)})")
    paths: list[Path] = []
    labels: list[int] = []
    for ci, d in enumerate(dirs):
        files = _files(d)
        if not files:
            raise DataError(f"{d}: empty class folder (expected .wav, .npy or .csv files)")
        paths += files
        labels += [ci] * len(files)
    for name in UNLABELLED:
        if (root / name).is_dir():
            files = _files(root / name)
            paths += files
            labels += [-1] * len(files)
    keep = subset_per_class(np.array(labels), max_per_class, seed)
    paths = [paths[int(i)] for i in keep]
    signals, rates = zip(*(read_signal(p) for p in paths), strict=True)
    bg_dir = root / BACKGROUND
    bg = [_clip(p) for p in _files(bg_dir)] if bg_dir.is_dir() else []
    rate = _common_rate([r for r in rates if r] + [r for _, r in bg if r])
    rel = [f"{p.parent.name}/{p.name}" for p in paths]
    out = RawData(
        raw=[
            resample(x, r, rate) if r and rate and r != rate else x
            for x, r in zip(signals, rates, strict=True)
        ],
        labels=np.array(labels, dtype=np.int64)[keep],
        names=tuple(d.name for d in dirs),
        sources=rel,
        sample_rate=rate,
        background=[resample(x, r, rate) if r and rate and r != rate else x for x, r in bg],
    )
    if any((root / name).is_file() for name in LISTS.values()):
        split = np.full(len(rel), "train", dtype="<U10")
        for name, list_file in LISTS.items():
            path = root / list_file
            listed = {ln.strip() for ln in path.read_text().splitlines()} if path.is_file() else set()
            split[[r in listed for r in rel]] = name
        out.split = split
    if all("_nohash_" in p.name for p in paths):  # Speech Commands: <speaker>_nohash_<n>.wav
        out.device = np.array([p.name.split("_nohash_", 1)[0] for p in paths])
    return out


def _common_rate(rates: list[int]) -> int | None:
    """The most common sample rate (the highest of equally common ones); None without audio."""
    if not rates:
        return None
    counts = Counter(rates)
    return max(counts, key=lambda r: (counts[r], r))


def _clip(path: Path) -> tuple[np.ndarray, int | None]:
    """One background clip: a 1-D signal and its rate."""
    x, rate = read_signal(path)
    if x.ndim != 1:
        raise DataError(f"{path}: background clip has shape {x.shape} (expected one channel)")
    return x, rate


def read_background(folder: Path, sample_rate: int | None) -> list[np.ndarray]:
    """float32 1-D clips of a folder's .wav / .npy / .csv files, WAVs resampled to ``sample_rate``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: background folder not found (expected a folder of .wav or .npy clips)")
    clips = []
    for p in _files(folder):
        x, r = _clip(p)
        clips.append(resample(x, r, sample_rate) if r and sample_rate and r != sample_rate else x)
    if not clips:
        raise DataError(f"{folder}: no background clips (expected .wav, .npy or .csv files)")
    return clips
