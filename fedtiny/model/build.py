"""Base model: train the Keras model centrally on factory data, convert to full-integer int8 TFLite, cache.

TensorFlow is imported here only, lazily, in the driver process. Built models are cached by a content hash of
everything that determines them, so a second run (and every test after the first) reuses the .tflite.

TensorFlow's CPU kernels differ between CPUs, so a model trained here differs in its bits from one trained on
another machine. The ready scenarios' models are therefore shipped (``reference/``, rebuilt by
``scripts/build_reference_models.py``): a spec equal to a shipped one's (its fields and the pipeline version;
not the TensorFlow version) gets the shipped bytes, checked against their sha256, before any cache or training.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import read_head
from fedtiny.model.quiet import quiet
from fedtiny.tasks import get_task

PIPELINE_VERSION = "1"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


#: where progress lines go (print, or the run's log)
Log = Callable[[str], object]


def cache_root() -> Path:
    """``$FEDTINY_CACHE`` or ``~/.cache/fedtiny``."""
    return Path(os.environ.get("FEDTINY_CACHE", Path.home() / ".cache" / "fedtiny"))


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a base model (its cache key)."""

    task: str
    task_params: dict[str, object] = field(default_factory=dict)
    seed: int = 0
    factory_samples: int = 3000
    test_samples: int = 1000
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    head_inputs: int = 64
    representative_samples: int = 300

    def fields(self) -> dict[str, object]:
        """The spec as plain JSON values (how a shipped model's meta records it)."""
        return dict(json.loads(json.dumps(self.__dict__, sort_keys=True)))

    def key(self) -> str:
        blob = json.dumps(
            {**self.__dict__, "pipeline": PIPELINE_VERSION, "tf": tensorflow_version()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def tensorflow_version() -> str:
    """The installed TensorFlow's version (the converter's version changes the bytes), read from the package
    metadata: importing TensorFlow takes seconds to minutes on a busy machine, and Flower's simulation process
    has 30 s to report in after it starts (it computes this key)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    with quiet():
        import tensorflow as tf  # an unusual install: ask the module itself

    return str(tf.__version__)


class ModelMeta(TypedDict, total=False):
    """A base model's meta (``meta.json`` of a cached build, ``<name>.json`` of a shipped reference model, which
    also records its name, scenarios, pipeline, sha256 and where it was built)."""

    name: str
    scenarios: list[str]
    pipeline: str
    spec: dict[str, object]
    float_accuracy: float
    int8_accuracy: float
    accuracy_measured_on: str
    bytes: int
    build_seconds: float
    sha256: str
    tensorflow: str
    built_on: str


@dataclass(frozen=True)
class BaseModel:
    """An int8 base model; ``path``: its cache directory, or the shipped reference ``.tflite``."""

    tflite: bytes
    float_accuracy: float
    int8_accuracy: float
    path: Path
    meta: ModelMeta


def factory_data(spec: ModelSpec, n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factory data under the task's default condition (stream 0 = train, 1 = test)."""
    task = get_task(spec.task, **spec.task_params)
    rng = np.random.default_rng([spec.seed, 0xFAC7, stream])
    labels = rng.permutation(np.arange(n) % len(task.classes))
    return task.generate(labels, rng, task.default_condition()), labels


@quiet()  # TensorFlow's output goes to the log file (fedtiny.model.quiet)
def convert_to_int8(model: Any, input_shape: tuple[int, ...], rep: np.ndarray) -> bytes:
    """Full-integer int8 .tflite (int8 input and output) of a Keras model, calibrated on ``rep`` inputs."""
    import keras
    import tensorflow as tf

    # Re-trace with a fixed batch size of 1: no dynamic-shape ops (SHAPE/STRIDED_SLICE/PACK) for the board.
    fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape=input_shape, batch_size=1))
    fixed.set_weights(model.get_weights())
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def train_and_convert(spec: ModelSpec, log: Log = print) -> tuple[bytes, float]:
    """Train on factory data and convert; returns (int8 .tflite bytes, float test accuracy)."""
    with quiet():  # TensorFlow's output goes to the log file (fedtiny.model.quiet)
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(spec.seed)
        tf.config.experimental.enable_op_determinism()
        task = get_task(spec.task, **spec.task_params)
        x, y = factory_data(spec, spec.factory_samples, 0)
        xt, yt = factory_data(spec, spec.test_samples, 1)
        model = task.build_model(head_inputs=spec.head_inputs)
        model.compile(
            optimizer=keras.optimizers.Adam(spec.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x, y, epochs=spec.epochs, batch_size=spec.batch_size, verbose=0, shuffle=True)
        float_acc = float(np.mean(np.argmax(model.predict(xt, batch_size=256, verbose=0), axis=-1) == yt))
    log(f"base model: float accuracy {float_acc:.4f} on {len(yt)} clean factory test samples")
    return convert_to_int8(model, task.input_shape, x[: spec.representative_samples]), float_acc


def build_entry(spec: ModelSpec, log: Log = print) -> tuple[bytes, ModelMeta]:
    """Train and convert ``spec``'s model and score it with TFLite Micro: (int8 .tflite, meta)."""
    from fedtiny.model.runtime import Int8Runner

    t0 = time.time()
    tflite, float_acc = train_and_convert(spec, log)
    read_head(tflite)  # fails early if the head is not a patchable per-channel int8 FULLY_CONNECTED
    xt, yt = factory_data(spec, spec.test_samples, 1)
    int8_acc = float(np.mean(Int8Runner(tflite, "tflm").predict(xt) == yt))
    log(f"base model: int8 accuracy {int8_acc:.4f} (TFLite Micro), {len(tflite)} bytes")
    meta: ModelMeta = {
        "spec": spec.fields(),
        "float_accuracy": float_acc,
        "int8_accuracy": int8_acc,
        "bytes": len(tflite),
        "build_seconds": round(time.time() - t0, 1),
    }
    return tflite, meta


def _shipped_bytes(model_file: Path) -> bytes:
    """A shipped model's bytes: the ``.tflite``, or, where only text files were copied (a Flower App package
    holds ``.py``/``.toml``/``.md``/``.json``/``.yaml`` files only, so the ServerApp of ``flwr run .`` sees no
    ``.tflite``), the base64 copy in ``<name>.tflite.json`` beside it."""
    try:
        return model_file.read_bytes()
    except OSError as exc:
        copy = model_file.with_name(model_file.name + ".json")
        try:
            return base64.b64decode(json.loads(copy.read_text())["base64"], validate=True)
        except (OSError, ValueError, KeyError, TypeError):
            raise ModelError(f"{model_file}: shipped reference model unreadable ({exc})") from exc


def shipped_model(spec: ModelSpec, directory: Path | None = None) -> BaseModel | None:
    """The shipped reference model whose meta records ``spec`` (and this pipeline version), or None.

    Its bytes must hash to the meta's sha256: a damaged file is a ModelError, never silently used or retrained.
    """
    d = REFERENCE_DIR if directory is None else directory
    want = spec.fields()
    for meta_file in sorted(d.glob("*.json")):
        if meta_file.name.endswith(".tflite.json"):  # a model's base64 copy, not a meta
            continue
        meta: ModelMeta = json.loads(meta_file.read_text())
        if meta.get("spec") != want or meta.get("pipeline") != PIPELINE_VERSION:
            continue
        model_file = meta_file.with_suffix(".tflite")
        tflite = _shipped_bytes(model_file)
        digest = hashlib.sha256(tflite).hexdigest()
        if digest != meta["sha256"]:
            raise ModelError(
                f"{model_file}: shipped reference model is damaged (sha256 {digest[:16]}..., "
                f"{meta_file.name} records {meta['sha256'][:16]}...); reinstall fedtiny or restore the file"
            )
        return BaseModel(tflite, meta["float_accuracy"], meta["int8_accuracy"], model_file, meta)
    return None


def build_base_model(spec: ModelSpec, log: Log = print) -> BaseModel:
    """The int8 base model for ``spec``: the shipped reference model if one has this spec (the same bits on
    every machine), else the cached build, else trained and converted here (and cached)."""
    shipped = shipped_model(spec)
    if shipped is not None:
        log(
            f"base model: the shipped reference model {shipped.path.name} (int8 accuracy "
            f"{shipped.int8_accuracy:.4f}, {len(shipped.tflite)} bytes, sha256 {shipped.meta['sha256'][:12]})"
        )
        return shipped
    path = cache_root() / "models" / spec.key()
    meta_file = path / "meta.json"
    if meta_file.exists():
        meta: ModelMeta = json.loads(meta_file.read_text())
        return BaseModel(
            (path / "model_int8.tflite").read_bytes(),
            meta["float_accuracy"],
            meta["int8_accuracy"],
            path,
            meta,
        )
    tflite, meta = build_entry(spec, log)
    path.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"  # concurrent builds of the same model must not write the same files
    (path / f"model_int8.tflite.{tag}").write_bytes(tflite)
    (path / f"model_int8.tflite.{tag}").replace(path / "model_int8.tflite")
    (path / f"meta.json.{tag}").write_text(json.dumps(meta, indent=2))
    (path / f"meta.json.{tag}").replace(meta_file)  # last: its presence marks a complete entry
    return BaseModel(tflite, meta["float_accuracy"], meta["int8_accuracy"], path, meta)
