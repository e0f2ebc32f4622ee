"""A user's model: an int8 ``.tflite`` used as it is, or a Keras model converted to full-integer int8.

Either way the result is checked the way fedtiny will use it (a trainable int8 FULLY_CONNECTED head on the
path to the output, int8 or float input/output) and every refusal is one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import ModelIO, metadata_classes, model_io, with_head_bias


@dataclass(frozen=True)
class UserModel:
    """The int8 model fedtiny deploys, and what is known about it."""

    tflite: bytes
    io: ModelIO
    source: Path
    classes: tuple[str, ...]  # from the model's metadata, if it has a label file
    num_classes: int
    float_predict: Callable[[np.ndarray], np.ndarray] | None = None  # Keras models: float predictions


def check_tflite(data: bytes, source: str | Path) -> ModelIO:
    """The model's I/O description; ModelError naming ``source`` when fedtiny cannot train its head."""
    try:
        return model_io(data)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None


def load_tflite(path: str | Path) -> UserModel:
    """A user's int8 ``.tflite`` file, validated."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: model file not found")
    data = p.read_bytes()
    try:
        data = with_head_bias(data)  # a head without a bias gets a zero one (same outputs, now trainable)
    except ModelError as exc:
        raise ModelError(f"{p}: {exc}") from None
    io = check_tflite(data, p)
    from fedtiny.model.flatbuffer import read_head

    return UserModel(data, io, p, metadata_classes(data), read_head(data).num_classes)


def convert_keras(
    path: str | Path, representative: np.ndarray, log: Callable[[str], Any] = print
) -> UserModel:
    """Convert a user's Keras classifier to full-integer int8 (int8 input and output, batch size 1), with
    ``representative`` model inputs (float32, drawn from the user's data) calibrating the activations."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: model file not found")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    try:
        model = keras.models.load_model(p, compile=False)
    except Exception as exc:  # keras raises many kinds for a file it cannot read
        raise ModelError(
            f"{p}: cannot load the Keras model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    shape = tuple(int(d) for d in model.input_shape[1:])
    if tuple(representative.shape[1:]) != shape:
        raise ModelError(
            f"{p}: the model takes inputs of shape {list(shape)}, the data gives "
            f"{list(representative.shape[1:])}"
        )
    from fedtiny.model.build import convert_to_int8

    try:
        tflite = with_head_bias(convert_to_int8(model, shape, representative.astype(np.float32)))
    except Exception as exc:  # the converter's errors are long; keep the first line
        raise ModelError(f"{p}: int8 conversion failed ({str(exc).splitlines()[0][:200]})") from None
    io = check_tflite(tflite, p)
    log(f"model: converted {p.name} to full-integer int8 ({len(tflite)} bytes, head {io.head_path})")
    from fedtiny.model.flatbuffer import read_head

    def float_predict(x: np.ndarray) -> np.ndarray:
        classes: np.ndarray = np.argmax(
            model.predict(x.astype(np.float32), batch_size=256, verbose=0), axis=-1
        )
        return classes

    return UserModel(tflite, io, p, (), read_head(tflite).num_classes, float_predict)
