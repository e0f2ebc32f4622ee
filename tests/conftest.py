"""Shared test setup: a model cache inside the repo (reused across local runs), no telemetry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("FEDTINY_CACHE", str(ROOT / ".cache" / "fedtiny-test"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_tflite() -> bytes:
    """A small real int8 model (conv backbone, 64 features, 5-class head) from the real TFLite converter."""
    import keras

    from fedtiny.model.build import convert_to_int8

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="features", bias_initializer="ones")(x)
    out = keras.layers.Dense(5, name="head", bias_initializer=keras.initializers.RandomNormal(0, 0.5))(x)
    model = keras.Model(inp, out)
    rep = np.random.default_rng(0).normal(size=(100, 16, 16, 1)).astype(np.float32)
    return convert_to_int8(model, (16, 16, 1), rep)
