"""Loaders for real datasets' on-disk layouts, producing the reference tasks' model inputs.

* :func:`load_speech_commands` reads the Google Speech Commands layout (one folder per word of 16 kHz mono
  WAV files, ``validation_list.txt`` / ``testing_list.txt``, ``_background_noise_``) with the stdlib
  ``wave`` module and returns the kws task's MFCC inputs, classes ``(*keywords, _silence_, _unknown_)``.
* :func:`load_cwru` reads Case Western Reserve University bearing ``.mat`` files (``X097_DE_time``,
  ``X097_FE_time``, ``X097RPM``) and returns the vibration task's inputs for 4096-sample windows.

Neither needs TensorFlow; both raise TaskError naming the path and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.errors import TaskError
from fedtiny.tasks.audio import CLIP, SAMPLE_RATE, fit_clip, mfcc, read_wav, resample
from fedtiny.tasks.kws import KEYWORDS
from fedtiny.tasks.vibration import CLASSES as VIB_CLASSES
from fedtiny.tasks.vibration import FS as VIB_FS
from fedtiny.tasks.vibration import WINDOW, front_end

SPLITS = ("train", "validation", "testing", "all")


@dataclass
class LoadedData:
    """Model inputs ``x`` (float32), labels ``y`` (int64, index into ``classes``) and per-example sources."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    sources: list[str]
    rpm: np.ndarray | None = None  # CWRU only: shaft speed per example (nan where the file has none)


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise TaskError(f"Speech Commands: {path} not found (expected the dataset's {name})")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def load_speech_commands(
    root: str | Path,
    keywords: tuple[str, ...] | list[str] = KEYWORDS,
    split: str = "train",
    max_per_class: int | None = None,
    silence_count: int | None = None,
    unknown_count: int | None = None,
    seed: int = 0,
) -> LoadedData:
    """MFCC inputs ``[N, 49, 10, 1]`` of a Speech Commands split.

    Unknown examples come from the word folders not in ``keywords``; silence examples are random 1 s crops
    of the ``_background_noise_`` files at a random level. Their counts default to the mean keyword count.
    """
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"Speech Commands: {root} is not a directory (expected one folder per word)")
    if split not in SPLITS:
        raise TaskError(f"Speech Commands: split must be one of {', '.join(SPLITS)}, got {split!r}")
    keywords = tuple(keywords)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    wanted: set[str] | None = None
    if split != "all":
        val, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
        held, wanted = val | test, {"validation": val, "testing": test}.get(split)

    def files(word_dir: Path) -> list[str]:
        rel = sorted(f"{word_dir.name}/{p.name}" for p in word_dir.glob("*.wav"))
        return [r for r in rel if (r in wanted if wanted is not None else r not in held)]

    per_word: list[list[str]] = []
    for word in keywords:
        if not (root / word).is_dir():
            raise TaskError(f"Speech Commands: folder {root / word} for keyword {word!r} not found")
        rel = files(root / word)
        if max_per_class is not None and len(rel) > max_per_class:
            rel = sorted(rng.choice(rel, max_per_class, replace=False).tolist())
        per_word.append(rel)
    mean_count = round(float(np.mean([len(r) for r in per_word]))) if per_word else 0
    others = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_") and p.name not in keywords
    )
    unknown = [r for d in others for r in files(d)]
    n_unknown = min(len(unknown), mean_count if unknown_count is None else unknown_count)
    unknown = sorted(rng.choice(unknown, n_unknown, replace=False).tolist()) if n_unknown else []
    paths = [r for rel in per_word for r in rel] + unknown
    labels = [i for i, rel in enumerate(per_word) for _ in rel] + [len(keywords) + 1] * len(unknown)
    audio = np.zeros((len(paths), CLIP), dtype=np.float32)
    for i, rel_path in enumerate(paths):
        x, rate = read_wav(root / rel_path)
        audio[i] = fit_clip(resample(x, rate))
    n_sil = mean_count if silence_count is None else silence_count
    silence = _silence(root, n_sil, rng)
    classes = (*keywords, "_silence_", "_unknown_")
    y = np.array(labels + [len(keywords)] * len(silence), dtype=np.int64)
    sources = paths + [f"_background_noise_#{i}" for i in range(len(silence))]
    return LoadedData(mfcc(np.concatenate([audio, silence])), y, classes, sources)


def _silence(root: Path, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random 1 s crops of the background-noise WAVs, scaled by a random 0..1 level."""
    if count <= 0:
        return np.zeros((0, CLIP), dtype=np.float32)
    bg = root / "_background_noise_"
    noises = []
    for p in sorted(bg.glob("*.wav")) if bg.is_dir() else []:
        x, rate = read_wav(p)
        x = resample(x, rate, SAMPLE_RATE)
        if len(x) >= CLIP:
            noises.append(x)
    if not noises:
        raise TaskError(
            f"Speech Commands: {bg} has no WAV of 1 s or more (needed for {count} silence examples)"
        )
    out = np.zeros((count, CLIP), dtype=np.float32)
    for i in range(count):
        x = noises[rng.integers(len(noises))]
        start = rng.integers(0, len(x) - CLIP + 1)
        out[i] = x[start : start + CLIP] * rng.uniform(0.0, 1.0)
    return out


# CWRU 12 kHz drive-end files (0-3 hp): file number -> fault class (fan-end and 48 kHz sets: pass label=)
_CWRU_RANGES = {
    "normal": [(97, 100)],
    "inner_race": [(105, 108), (169, 172), (209, 212), (3001, 3004)],
    "ball": [(118, 121), (185, 188), (222, 225), (3005, 3008)],
    "outer_race": [(130, 133), (144, 147), (156, 160), (197, 200), (234, 237), (246, 249), (258, 261)],
}
CWRU_LABELS = {n: c for c, ranges in _CWRU_RANGES.items() for lo, hi in ranges for n in range(lo, hi + 1)}


def load_cwru(
    path_or_dir: str | Path,
    channel: str = "DE",
    label: str | None = None,
    fs: int = 12_000,
    hop: int = WINDOW,
    max_windows: int | None = None,
) -> LoadedData:
    """Vibration-task inputs ``[N, 32, 32, 1]`` of CWRU .mat files, one per 4096-sample window at 12 kHz.

    ``channel`` is DE (drive end), FE (fan end) or BA (base). The class comes from ``label`` or else from
    the file number (12 kHz drive-end table, ``CWRU_LABELS``). ``fs`` is the recording rate (12000 or 48000).
    """
    import scipy.io

    path = Path(path_or_dir)
    if path.is_dir():
        mats = sorted(path.glob("*.mat"))
        if not mats:
            raise TaskError(f"CWRU: no .mat files in {path}")
    elif path.is_file():
        mats = [path]
    else:
        raise TaskError(f"CWRU: {path} not found (expected a .mat file or a directory of them)")
    if label is not None and label not in VIB_CLASSES:
        raise TaskError(f"CWRU: label must be one of {', '.join(VIB_CLASSES)}, got {label!r}")
    xs, ys, srcs, rpms = [], [], [], []
    for mat in mats:
        try:
            data = scipy.io.loadmat(str(mat))
        except Exception as e:
            raise TaskError(f"CWRU: cannot read {mat}: {e}") from None
        pat = re.compile(rf"^X(\d+)_{re.escape(channel)}_time$")
        keys = sorted(k for k in data if pat.match(k))
        if not keys:
            names = ", ".join(k for k in data if not k.startswith("__"))
            raise TaskError(f"CWRU: {mat} has no variable X<nnn>_{channel}_time (variables: {names})")
        stem = re.sub(r"\D", "", mat.stem)
        key = next((k for k in keys if stem and int(pat.match(k).group(1)) == int(stem)), keys[0])  # type: ignore[union-attr]
        num = pat.match(key).group(1)  # type: ignore[union-attr]
        cls = label or CWRU_LABELS.get(int(num))
        if cls is None:
            raise TaskError(f"CWRU: no class known for {mat} (file number {int(num)}); pass label=")
        sig = resample(np.asarray(data[key], dtype=np.float64).ravel(), fs, VIB_FS)
        n = (len(sig) - WINDOW) // hop + 1 if len(sig) >= WINDOW else 0
        if max_windows is not None:
            n = min(n, max_windows)
        if n == 0:
            continue
        idx = np.arange(n)[:, None] * hop + np.arange(WINDOW)
        xs.append(sig[idx].astype(np.float32))
        ys += [VIB_CLASSES.index(cls)] * n
        srcs += [f"{mat}#{i}" for i in range(n)]
        rpm_var = data.get(f"X{num}RPM")
        rpms += [float(np.asarray(rpm_var).ravel()[0]) if rpm_var is not None else float("nan")] * n
    if not xs:
        raise TaskError(f"CWRU: {path} holds no {channel} recording of {WINDOW} samples or more")
    x = front_end(np.concatenate(xs))
    return LoadedData(x, np.array(ys, dtype=np.int64), VIB_CLASSES, srcs, np.array(rpms))
