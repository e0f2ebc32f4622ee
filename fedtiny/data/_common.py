"""What the format readers return, and helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedtiny.errors import DataError


@dataclass
class RawData:
    """A reader's result before label mapping: labels as numbers or names, device ids as found."""

    raw: list[np.ndarray] | np.ndarray
    labels: np.ndarray  # int / float (numbers) or str (names)
    names: tuple[str, ...] | None  # class names the file itself gives (npz "classes", folder names)
    sources: list[str]
    device: np.ndarray | None = None
    time: np.ndarray | None = None
    split: np.ndarray | None = None
    sample_rate: int | None = None
    background: list[np.ndarray] = field(default_factory=list)
    is_int8: bool = False


def subset_per_class(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most ``max_per_class`` examples of each label.

    Examples without a label (``-1``) are no class: a seeded share of them is kept equal to the share of
    the labelled examples kept, so the subset has the data's labelled share (all of them when none is
    labelled)."""
    if max_per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    found = np.unique(labels)
    for label in found[found >= 0]:  # sorted, so the draws do not depend on file order
        idx = np.flatnonzero(labels == label)
        keep.append(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False))
    unlabelled = np.flatnonzero(labels < 0)
    if len(unlabelled):
        n_labelled = len(labels) - len(unlabelled)
        kept = sum(len(k) for k in keep)
        m = len(unlabelled) if not n_labelled else int(round(len(unlabelled) * kept / n_labelled))
        keep.append(unlabelled if m >= len(unlabelled) else rng.choice(unlabelled, m, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def check_finite(where: str, x: np.ndarray) -> None:
    """DataError naming the first example (first axis) holding NaN or Inf."""
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"{where}: NaN or Inf at index {tuple(int(i) for i in bad)} (expected finite numbers)"
        )


def parse_time(where: str, values: np.ndarray) -> np.ndarray:
    """float64 times from numbers or ISO 8601 strings (seconds since the epoch); finite."""
    if values.dtype.kind in "US":
        from datetime import datetime

        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            try:
                out[i] = float(v)
            except ValueError:
                try:
                    out[i] = datetime.fromisoformat(str(v)).timestamp()
                except ValueError:
                    raise DataError(
                        f"{where}: time {str(v)!r} of example {i} is neither a number nor an ISO 8601 date"
                    ) from None
        values = out
    if values.dtype.kind not in "iuf" or values.ndim != 1:
        raise DataError(f"{where}: time must be one number per example, got {values.dtype} {values.shape}")
    t = values.astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise DataError(f"{where}: time of example {int(np.argmin(np.isfinite(t)))} is NaN or Inf")
    return t
