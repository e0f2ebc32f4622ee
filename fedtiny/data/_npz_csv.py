"""Readers for the one-file formats: ``.npz`` (arrays x, y, ...) and ``.csv`` (one example per row)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from fedtiny.data._common import RawData, check_finite, parse_time
from fedtiny.errors import DataError

SPLITS = ("train", "validation", "testing")
_NPZ_HINT = "expected an .npz archive written by numpy.savez with arrays x and y"


def read_npz(path: Path) -> RawData:
    """Arrays ``x``, ``y`` and optional ``device``, ``time``, ``classes``, ``split``, ``sample_rate``."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file ({_NPZ_HINT})")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a zip archive ({_NPZ_HINT})")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = np.asarray(npz[key])
    except ValueError as e:  # object arrays need pickle, which we never allow (untrusted files)
        raise DataError(
            f"{path}: cannot read an array ({e}; {_NPZ_HINT}, numeric or string arrays only)"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise DataError(f"{path}: corrupt archive ({e}; {_NPZ_HINT})") from None
    for key in ("x", "y"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "none"
            raise DataError(f"{path}: missing array {key!r} (arrays found: {found}; {_NPZ_HINT})")
    x, labels = arrays["x"], arrays["y"]
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path}: array x holds no examples (expected x of shape [N, ...] with N >= 1)")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(x):
        raise DataError(
            f"{path}: y has shape {labels.shape} but x has {len(x)} examples (expected y of shape [N])"
        )
    if x.dtype.kind not in "iuf":
        raise DataError(f"{path}: x has dtype {x.dtype} (expected float32/float64 or int8 numbers)")
    check_finite(f"{path}: x", x)
    is_int8 = x.dtype == np.int8  # already quantized model inputs: kept bit for bit
    n = len(x)
    out = RawData(
        raw=x if is_int8 else x.astype(np.float32),
        labels=labels,
        names=None,
        sources=[f"{path.name}[{i}]" for i in range(n)],
        is_int8=is_int8,
    )
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or len(names) == 0 or len({str(v) for v in names}) != len(names):
            raise DataError(
                f"{path}: classes must be a non-empty list of distinct names, got {names.tolist()!r}"
            )
        out.names = tuple(str(v) for v in names)
    for key in ("device", "time", "split"):
        if key in arrays and (arrays[key].ndim != 1 or len(arrays[key]) != n):
            raise DataError(
                f"{path}: {key} has shape {arrays[key].shape} (expected one value per example, [{n}])"
            )
    out.device = arrays.get("device")
    if "time" in arrays:
        out.time = parse_time(f"{path}: time", arrays["time"])
    if "split" in arrays:
        out.split = arrays["split"].astype(str)
        bad = sorted(set(out.split.tolist()) - set(SPLITS))
        if bad:
            raise DataError(f"{path}: unknown split {bad[0]!r} (expected {', '.join(SPLITS)})")
    if "sample_rate" in arrays:
        rate = arrays["sample_rate"]
        if rate.size != 1 or rate.dtype.kind not in "iuf" or not 0 < float(rate.ravel()[0]) < 1e7:
            raise DataError(f"{path}: sample_rate must be one positive number in Hz, got {rate.tolist()!r}")
        out.sample_rate = int(rate.ravel()[0])
    return out


def read_text(path: Path) -> str:
    """The file as text; DataError for an empty, binary or non-UTF-8 file."""
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: empty file (expected comma-separated numbers)")
    if b"\x00" in data:
        raise DataError(f"{path}: binary data, not a text CSV file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text CSV file ({e.reason} at byte {e.start})") from None


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row; the delimiter is ',' unless the first line has only ';' or tabs."""
    text = read_text(path)
    first = text.lstrip().split("\n", 1)[0]
    delim = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    try:
        rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)]
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no values (expected comma-separated numbers)")
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_int(cell: str) -> bool:
    return _is_number(cell) and np.isfinite(float(cell)) and float(cell) == int(float(cell))


def parse_numbers(path: Path, line: int, cells: list[str], names: list[str]) -> np.ndarray:
    """float64 values of ``cells``; DataError naming the line and column of the first non-number."""
    try:
        values = np.array(cells, dtype=np.float64)  # fast path: numpy parses the strings
    except ValueError:
        values = np.full(len(cells), np.nan)
    if not np.all(np.isfinite(values)):
        bad = next(i for i, c in enumerate(cells) if not _is_number(c) or not np.isfinite(float(c)))
        raise DataError(
            f"{path}:{line}: column {names[bad]!r} holds {cells[bad]!r} (expected a finite number)"
        )
    return values


def _column(spec: str, header: list[str] | None, ncols: int) -> int | None:
    """Index of the column named (or numbered) ``spec``; None when absent."""
    if header is not None and spec in header:
        return header.index(spec)
    if spec.isdigit() and int(spec) < ncols:
        return int(spec)
    return None


def read_csv(path: Path, label_column: str, device_column: str, time_column: str) -> RawData:
    """One example per row: a label column, optional device and time columns, every other cell a signal value."""
    rows = csv_rows(path)
    first = rows[0][1]
    if label_column.isdigit():  # a header is there when a cell besides the label is not a number
        has_header = any(not _is_number(c) for i, c in enumerate(first) if i != int(label_column))
    else:
        has_header = True
    header = first if has_header else None
    ncols = len(first)
    label_idx = _column(label_column, header, ncols)
    if label_idx is None:  # name a few columns, not hundreds of signal columns
        cols = header or [str(i) for i in range(ncols)]
        found = ", ".join(cols[:6]) + (f", ... ({len(cols)} in all)" if len(cols) > 6 else "")
        raise DataError(f"{path}: no label column {label_column!r} (columns found: {found})")
    device_idx = _column(device_column, header, ncols) if device_column else None
    time_idx = _column(time_column, header, ncols) if time_column else None
    special = {label_idx, device_idx, time_idx} - {None}
    signal_idx = [i for i in range(ncols) if i not in special]
    names = header or [str(i) for i in range(ncols)]
    if not signal_idx:
        raise DataError(f"{path}: no signal columns (every column is label, device or time)")
    data = rows[1:] if has_header else rows
    if not data:
        raise DataError(f"{path}: no data rows (expected one example per row after the header)")
    x = np.empty((len(data), len(signal_idx)), dtype=np.float32)
    labels, devices, times, sources = [], [], [], []
    sig_names = [names[i] for i in signal_idx]
    for r, (line, cells) in enumerate(data):
        if len(cells) != ncols:
            raise DataError(f"{path}:{line}: {len(cells)} columns, expected {ncols} as in the first row")
        x[r] = parse_numbers(path, line, [cells[i] for i in signal_idx], sig_names)
        labels.append(cells[label_idx])  # "" (an empty cell): the example has no label
        devices.append(cells[device_idx] if device_idx is not None else "")
        times.append(cells[time_idx] if time_idx is not None else "")
        sources.append(f"{path.name}:{line}")
    lab = np.array(labels)
    if all(_is_number(v) for v in labels if v):  # numbers (integers checked when mapped); no label: -1
        lab = np.array([float(v) if v else -1.0 for v in labels], dtype=np.float64)
        if all(_is_int(v) for v in labels if v):
            lab = lab.astype(np.int64)
    dev = None
    if device_idx is not None:
        dev = np.array(devices)
        if all(v.lstrip("-").isdigit() for v in devices):
            dev = dev.astype(np.int64)
    t = parse_time(f"{path}: column {names[time_idx]!r}", np.array(times)) if time_idx is not None else None
    return RawData(raw=x, labels=lab, names=None, sources=sources, device=dev, time=t)
