"""A user's model: an int8 ``.tflite`` used as it is, or a Keras model converted to full-integer int8.

Either way the result is checked the way fedtiny will use it (a trainable int8 FULLY_CONNECTED head on the
path to the output, int8 or float input/output) and every refusal is one line naming the file.
"""

from __future__ import annotations

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


#: how a readable Keras file begins: a ``.keras`` file is a zip archive, an ``.h5`` file an HDF5 file
KERAS_MAGIC = {".keras": b"PK\x03\x04", ".h5": b"\x89HDF\r\n\x1a\n", ".hdf5": b"\x89HDF\r\n\x1a\n"}


def check_keras_file(p: Path) -> None:
    """ModelError naming ``p`` when it cannot be a whole Keras model (Keras's own message for a truncated
    ``.keras`` file is a misleading "File not found")."""
    magic = KERAS_MAGIC.get(p.suffix.lower())
    if magic is None:
        raise ModelError(f"{p}: not a Keras model file (.keras or .h5)")
    try:
        with p.open("rb") as f:
            head = f.read(len(magic))
    except OSError as exc:
        raise ModelError(f"{p}: cannot read the Keras model ({exc.strerror or exc})") from None
    if head != magic:
        kind = "zip archive" if p.suffix.lower() == ".keras" else "HDF5 file"
        raise ModelError(f"{p}: not a Keras model: the file is not a {kind} (damaged or not a Keras save)")
    if p.suffix.lower() == ".keras":
        import zipfile

        try:
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError):
            bad = "?"
        if bad is not None:
            raise ModelError(f"{p}: not a Keras model: the zip archive is truncated or damaged")


def convert_keras(
    path: str | Path,
    representative: np.ndarray | Callable[[tuple[int, ...]], np.ndarray],
    log: Callable[[str], Any] = print,
) -> UserModel:
    """Convert a user's Keras classifier to full-integer int8 (int8 input and output, batch size 1), with
    ``representative`` model inputs (float32, drawn from the user's data; or a function of the model's input
    shape that makes them) calibrating the activations."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: model file not found")
    check_keras_file(p)
    from fedtiny.model.quiet import quiet

    try:
        with quiet():  # TensorFlow's output goes to the log file (fedtiny.model.quiet)
            import keras

            model = keras.models.load_model(p, compile=False)
    except Exception as exc:  # keras raises many kinds for a file it cannot read
        why = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
        if "file not found" in why.lower():  # Keras's words for a file it cannot parse: misleading
            why = "damaged or not a Keras save"
        raise ModelError(f"{p}: cannot load the Keras model ({why or type(exc).__name__})") from None
    shape = tuple(int(d) for d in model.input_shape[1:])
    if callable(representative):  # inputs made for the model's input shape
        representative = representative(shape)
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
        with quiet():
            classes: np.ndarray = np.argmax(
                model.predict(x.astype(np.float32), batch_size=256, verbose=0), axis=-1
            )
        return classes

    return UserModel(tflite, io, p, (), read_head(tflite).num_classes, float_predict)
