"""A custom fedtiny task: tones of four pitches, with a sensor gain and a noise floor as drift knobs.

Use it from a scenario with ``task.name = "tone_task:ToneTask"`` (this folder on PYTHONPATH), or with
``task.name = "examples.custom_task.tone_task:ToneTask"`` from the repository root. fedtiny trains the model
that ``build_model`` returns on factory data (``generate`` under ``default_condition``), converts it to int8
and deploys it; drift events set the knobs below on part of the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedtiny import Task


class ToneTask(Task):
    name = "tone"
    classes = ("low", "mid", "high", "very_high")
    input_shape = (64, 1)
    drift_knobs = {"gain": "sensor gain (1 = factory)", "noise": "noise floor, standard deviation"}
    knob_ranges = {"gain": (0.01, 100.0), "noise": (0.0, 10.0)}

    def __init__(self, base_hz: float = 2.0) -> None:
        self.base_hz = base_hz

    def default_condition(self) -> dict[str, float]:
        return {"gain": 1.0, "noise": 0.1}

    def generate(
        self, labels: np.ndarray, rng: np.random.Generator, condition: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """float32 [N, 64, 1]: a tone whose pitch is the class, at a random phase, scaled and noisy."""
        y = self.check_labels(labels)
        c = self.resolve_condition(condition)
        t = np.arange(64) / 64.0
        freq = self.base_hz * (1.0 + np.asarray(y, dtype=np.float64))[:, None] * 2.0
        phase = rng.uniform(0, 2 * np.pi, (len(y), 1))
        x = c["gain"] * np.sin(2 * np.pi * freq * t[None, :] + phase) + c["noise"] * rng.standard_normal(
            (len(y), 64)
        )
        return x[..., None].astype(np.float32)

    def build_model(self, head_inputs: int = 64, *, batch_size: int | None = 1) -> Any:
        import keras

        inp = keras.Input(self.input_shape, batch_size=batch_size)
        h = keras.layers.Conv1D(8, 5, strides=2, activation="relu")(inp)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(head_inputs, activation="relu", name="features")(h)
        return keras.Model(inp, keras.layers.Dense(len(self.classes), name="head")(h))
