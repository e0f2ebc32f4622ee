"""The Task interface shared by all reference tasks, and helpers for drift conditions.

A task is a seeded data generator plus a Keras model builder. ``generate`` returns model inputs (float32,
what a board's front end computes) for the requested labels under an operating *condition*: a mapping of
drift-knob name to float. Missing knobs take the task's factory defaults; unknown knobs, non-finite values
and values outside the knob's range (``knob_ranges``) raise TaskError.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedtiny.errors import TaskError

if TYPE_CHECKING:  # pragma: no cover
    import keras


class Task(ABC):
    """A reference task: classes, input shape, drift knobs, seeded generator and model builder."""

    name: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    drift_knobs: dict[str, str]
    #: valid (min, max) of each drift knob, inclusive; a knob missing here only has to be finite. The
    #: scenario loader checks fleet.condition (+/- fleet.spread) and every drift event against it.
    knob_ranges: dict[str, tuple[float, float]] = {}

    @abstractmethod
    def default_condition(self) -> dict[str, float]:
        """The factory operating condition: every drift knob at its default value."""

    @abstractmethod
    def generate(
        self,
        labels: np.ndarray,
        rng: np.random.Generator,
        condition: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """float32 ``[len(labels), *input_shape]``: one example of each requested class under ``condition``."""

    @abstractmethod
    def build_model(self, head_inputs: int = 64, *, batch_size: int | None = 1) -> keras.Model:
        """Keras functional model: backbone -> ``features`` (head_inputs units) -> ``head`` logits (no softmax).

        The input has a fixed batch size of 1 (what the int8 converter and the board want); pass
        ``batch_size=None`` for a model to train with larger batches (same layers and weight shapes).
        """

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def resolve_condition(self, condition: Mapping[str, float] | None) -> dict[str, float]:
        """Defaults overridden by ``condition``; TaskError on unknown knobs, non-finite or out-of-range values."""
        out = self.default_condition()
        for key, value in (condition or {}).items():
            if key not in self.drift_knobs:
                valid = ", ".join(sorted(self.drift_knobs))
                raise TaskError(f"unknown drift knob {key!r} for task {self.name!r}; valid knobs: {valid}")
            try:
                fval = float(value)
            except (TypeError, ValueError):
                raise TaskError(
                    f"drift knob {key!r} of task {self.name!r} must be a number, got {value!r}"
                ) from None
            if not math.isfinite(fval):
                raise TaskError(f"drift knob {key!r} of task {self.name!r} must be finite, got {value!r}")
            problem = self.knob_problem(key, fval)
            if problem:
                raise TaskError(f"drift knob {key!r} of task {self.name!r} {problem}")
            out[key] = fval
        return out

    def knob_problem(self, knob: str, value: float) -> str:
        """Why ``value`` is not valid for ``knob`` ("" when it is): non-finite or outside ``knob_ranges``."""
        if not math.isfinite(value):
            return f"must be finite, got {value!r}"
        lo, hi = self.knob_ranges.get(knob, (-math.inf, math.inf))
        if not lo <= value <= hi:
            return f"= {value:g} is outside its range {lo:g}..{hi:g}"
        return ""

    def check_labels(self, labels: np.ndarray) -> np.ndarray:
        """Labels as a 1-D int64 array; TaskError if any is outside ``0..num_classes-1``."""
        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise TaskError(f"labels for task {self.name!r} must be 1-D, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
            raise TaskError(f"labels for task {self.name!r} must be integers")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise TaskError(
                f"labels for task {self.name!r} must be in 0..{self.num_classes - 1} "
                f"({', '.join(self.classes)}), got {int(arr.min())}..{int(arr.max())}"
            )
        return arr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, classes={len(self.classes)}, input={self.input_shape})"
