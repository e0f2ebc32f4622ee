"""Load a user's recordings (npz, one folder per class, csv) into one :class:`Recordings` value.

The readers in ``_npz_csv`` and ``_folders`` return labels as they are in the file (numbers or names); this
module maps them onto the model's classes, encodes device names as ids and takes the per-class subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedtiny.data._common import RawData, subset_per_class
from fedtiny.errors import DataError

FORMATS = ("npz", "folders", "csv")


@dataclass
class Recordings:
    """A user's examples: raw signals (or model inputs), labels, and where/when/on which device each was."""

    raw: list[np.ndarray] | np.ndarray  # one signal per example (npz: float32 or int8 model inputs)
    y: np.ndarray  # int64 [N], index into classes; -1: no label (used unlabelled, never tested)
    classes: tuple[str, ...]
    device: np.ndarray | None  # int64 [N] device id per example (index into device_names), or None
    time: np.ndarray | None  # float64 [N] orderable recording time, or None (file/row order then)
    sources: list[str]  # where each example came from ("file.wav", "file.npz[i]", "file.csv:line")
    split: np.ndarray | None = None  # str [N]: "train" / "validation" / "testing" where the data says so
    sample_rate: int | None = None  # audio: the common rate every clip was resampled to
    device_names: tuple[str, ...] = ()  # original device / speaker names; device ids index into it
    background: list[np.ndarray] = field(default_factory=list)  # background clips (_background_noise_)
    is_int8: bool = False  # raw holds already-quantized int8 model inputs (npz only)
    data_classes: tuple[
        str, ...
    ] = ()  # the class names in the data's own order (before mapping onto classes)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labelled(self) -> np.ndarray:
        """bool [N]: the examples that have a label (``y >= 0``)."""
        mask: np.ndarray = self.y >= 0
        return mask


def detect_format(path: Path) -> str:
    """``"folders"`` for a directory, ``"npz"`` / ``"csv"`` by suffix (or a zip's magic bytes for npz)."""
    path = Path(path)
    if path.is_dir():
        return "folders"
    if not path.exists():
        raise DataError(f"{path}: not found (expected a .npz file, a .csv file or a folder of class folders)")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":  # numpy.savez writes a zip archive
            return "npz"
    raise DataError(
        f"{path}: unknown data format (expected a .npz file, a .csv file or a folder of class folders)"
    )


def load_recordings(
    path: str | Path,
    format: str = "auto",  # the scenario key is data.format
    *,
    label_column: str = "label",
    device_column: str = "device",
    time_column: str = "time",
    max_per_class: int = 0,
    seed: int = 0,
    classes: Sequence[str] = (),
) -> Recordings:
    """Read ``path`` in ``format`` (auto: :func:`detect_format`); ``classes`` (the model's) fix the label order.

    ``max_per_class`` > 0 keeps a seeded random subset of that many examples per class, in file order.
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r} (expected auto, {', '.join(FORMATS)})")
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir() != (fmt == "folders"):
        want = "a folder of class folders" if fmt == "folders" else f"a .{fmt} file"
        raise DataError(f"{path}: format {fmt} expects {want}")
    if fmt == "folders":
        from fedtiny.data._folders import read_folders

        raw = read_folders(path, classes, max_per_class, seed)
    elif fmt == "npz":
        from fedtiny.data._npz_csv import read_npz

        raw = read_npz(path)
    else:
        from fedtiny.data._npz_csv import read_csv

        raw = read_csv(path, label_column, device_column, time_column)
    y, names = _map_labels(path, raw.labels, raw.names, tuple(classes), fmt, raw.sources)
    if not np.any(y >= 0):
        raise DataError(
            f"{path}: no labelled examples (every label is -1, empty or in _unlabelled; at least each device's "
            f"test examples need their label)"
        )
    device, device_names = _encode_devices(path, raw.device)
    rec = Recordings(
        raw=raw.raw,
        y=y,
        classes=names,
        device=device,
        time=raw.time,
        sources=raw.sources,
        split=raw.split,
        sample_rate=raw.sample_rate,
        device_names=device_names,
        background=raw.background,
        is_int8=raw.is_int8,
        data_classes=raw.names
        or (
            tuple(sorted({str(v) for v in raw.labels} - set(_NO_LABEL_NAMES)))
            if raw.labels.dtype.kind in "US"
            else ()
        ),
    )
    if max_per_class > 0:
        rec = _take(rec, subset_per_class(rec.y, max_per_class, seed))
    return rec


def load_background(folder: str | Path, sample_rate: int | None = None) -> list[np.ndarray]:
    """float32 clips of every .wav / .npy file in ``folder`` (WAVs resampled to ``sample_rate`` when given)."""
    from fedtiny.data._folders import read_background

    return read_background(Path(folder), sample_rate)


def _expected(names: Sequence[str]) -> str:
    shown = ", ".join(names[:30])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 30 else "")


#: a label that says "this example has no label": -1 as a number, "" (an empty csv cell) or "-1" as a name
NO_LABEL = -1
_NO_LABEL_NAMES = ("", "-1")


def _at(fmt: str, sources: list[str], i: int) -> str:
    """Which example ``i`` is, for a message: "of example i" (its npz row), "on line n" (csv), "of file f"."""
    src = sources[i] if i < len(sources) else ""
    if fmt == "csv" and ":" in src:
        return f"on line {src.rsplit(':', 1)[1]}"
    if fmt == "folders" and src:
        return f"of file {src}"
    return f"of example {i}"


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _map_labels(
    path: Path,
    labels: np.ndarray,
    file_names: tuple[str, ...] | None,
    classes: tuple[str, ...],
    fmt: str = "npz",
    sources: list[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """int64 labels indexing the model's ``classes`` (or the file's names, or 0..max when neither); -1: no label.

    Every refusal names the file and the example (its row, csv line or file)."""
    src = sources or []

    def at(i: int | np.integer) -> str:
        return _at(fmt, src, int(i))

    if labels.dtype.kind in "US":  # labels given by name
        text = labels.astype(str)
        given = ~np.isin(text, _NO_LABEL_NAMES)
        target = classes or file_names or ()
        numeric = np.array([_is_number(v) for v in text[given]], dtype=bool)
        if numeric.any() and not numeric.all() and not all(v in target for v in text[given][numeric]):
            # some labels are numbers, others names: one kind is wrong; name the first of the fewer
            wrong_numbers = int(numeric.sum()) < int((~numeric).sum())
            bad = int(np.flatnonzero(given)[np.flatnonzero(numeric if wrong_numbers else ~numeric)[0]])
            kind, others = ("a number", "names") if wrong_numbers else ("text", "numbers")
            raise DataError(
                f"{path}: label {str(text[bad])!r} {at(bad)} is {kind}, the other labels are {others} (expected "
                f"class indices 0, 1, ... or class names throughout; no label: an empty cell or -1)"
            )
        target = target or tuple(sorted(set(text[given].tolist())))
        index = {n: i for i, n in enumerate(target)}
        y = np.full(len(text), NO_LABEL, dtype=np.int64)
        for i in np.flatnonzero(given):
            v = str(text[i])
            if v not in index:
                raise DataError(f"{path}: unknown label {v!r} {at(i)} (expected one of {_expected(target)})")
            y[i] = index[v]
        return y, target
    if labels.dtype.kind not in "iuf":
        raise DataError(f"{path}: labels must be integers or class names, got dtype {labels.dtype}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        bad = int(np.flatnonzero(~np.isfinite(labels))[0])
        raise DataError(
            f"{path}: label {labels[bad]} {at(bad)} is not a finite number (expected a class index "
            f"0, 1, ..., or -1: no label)"
        )
    y = labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.any(y != labels):
        bad = int(np.flatnonzero(y != labels)[0])
        raise DataError(
            f"{path}: label {labels[bad]} {at(bad)} is not an integer (expected a class index 0, 1, ..., "
            f"or -1: no label)"
        )
    if len(y) and np.any(y < NO_LABEL):
        bad = int(np.flatnonzero(y < NO_LABEL)[0])
        raise DataError(
            f"{path}: label {y[bad]} {at(bad)} is negative (expected 0..number of classes-1, or -1: no label)"
        )
    given = y >= 0
    top = int(y.max()) if len(y) else -1
    names = file_names or classes or tuple(str(i) for i in range(top + 1))
    if top >= len(names):
        bad = int(np.argmax(y))
        raise DataError(
            f"{path}: label {y[bad]} {at(bad)} is >= the number of classes {len(names)} "
            f"(expected 0..{len(names) - 1}: {_expected(names)}, or -1: no label)"
        )
    if file_names and classes and file_names != classes:  # the file's names onto the model's order
        index = {n: i for i, n in enumerate(classes)}
        for n in file_names:
            if n not in index:
                raise DataError(f"{path}: unknown class {n!r} (expected one of {_expected(classes)})")
        y[given] = np.array([index[n] for n in file_names], dtype=np.int64)[y[given]]
        names = classes
    return y, names


def _encode_devices(path: Path, device: np.ndarray | None) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Dense int64 ids 0..K-1 and the original names (numbers written as integers where they are)."""
    if device is None:
        return None, ()
    if device.dtype.kind == "f":
        if not np.all(np.isfinite(device)) or np.any(device != np.round(device)):
            raise DataError(f"{path}: device ids must be integers or names, got non-integer numbers")
        device = device.astype(np.int64)
    if device.dtype.kind not in "iuUSb":
        raise DataError(f"{path}: device ids must be integers or names, got dtype {device.dtype}")
    uniq, ids = np.unique(device, return_inverse=True)
    return ids.astype(np.int64).ravel(), tuple(str(v) for v in uniq)


def _take(rec: Recordings, idx: np.ndarray) -> Recordings:
    """The examples ``idx`` of ``rec`` (device ids and names kept as they are)."""
    raw = rec.raw[idx] if isinstance(rec.raw, np.ndarray) else [rec.raw[int(i)] for i in idx]
    return Recordings(
        raw=raw,
        y=rec.y[idx],
        classes=rec.classes,
        device=None if rec.device is None else rec.device[idx],
        time=None if rec.time is None else rec.time[idx],
        sources=[rec.sources[int(i)] for i in idx],
        split=None if rec.split is None else rec.split[idx],
        sample_rate=rec.sample_rate,
        device_names=rec.device_names,
        background=rec.background,
        is_int8=rec.is_int8,
        data_classes=rec.data_classes,
    )


__all__ = [
    "FORMATS",
    "NO_LABEL",
    "RawData",
    "Recordings",
    "detect_format",
    "load_background",
    "load_recordings",
]
