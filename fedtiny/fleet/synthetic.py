"""A stand-in backbone for tests and benchmarks: no TensorFlow, no interpreter, same data path.

``ProjectionFeaturizer`` maps task inputs to int8 features with a fixed random projection + ReLU +
quantization (a frozen "backbone"), and :func:`prepare_synthetic` builds a fleet with it plus an initial int8
head fitted by a few steps of least squares on factory data. Results are not those of the real int8 model;
use it where the question is the fleet machinery (resume, rejection, throughput), not the task accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedtiny.fleet.data import FLEET_DIR, FleetLayout, prepare_fleet
from fedtiny.fleet.spec import FleetSpec
from fedtiny.ondevice import FloatHead, Int8Head, quantize_head
from fedtiny.ondevice.quant import dequantize

INPUT_SCALE, INPUT_ZP = 0.05, -128


class ProjectionFeaturizer:
    def __init__(self, input_size: int, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 0x5E7])
        self.proj = (rng.standard_normal((input_size, dim)) / np.sqrt(input_size)).astype(np.float32)
        self.shift: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if self.shift is None:
            self.shift = x.mean(axis=0)
        z = np.maximum((x - self.shift) @ self.proj * 4.0, 0.0)
        arr: np.ndarray = np.clip(np.round(z / INPUT_SCALE) + INPUT_ZP, -128, 127).astype(np.int8)
        return arr


def prepare_synthetic(
    s: FleetSpec, out_dir: Path, log: Callable[[str], object] = lambda *_: None
) -> tuple[FleetLayout, Int8Head]:
    """Fleet data under ``out_dir/fleet`` with the projection featurizer, and an initial int8 head."""
    task = s.task
    feat = ProjectionFeaturizer(int(np.prod(task.input_shape)), s.model.head_inputs, s.seed)
    rng = np.random.default_rng([s.seed, 0xFAC7])
    y = rng.permutation(np.arange(60 * task.num_classes) % task.num_classes)
    f = feat(task.generate(y, rng, task.default_condition()))  # fixes the featurizer's centering first
    tag = f"synthetic-{s.model.head_inputs}".encode()
    layout = prepare_fleet(s, tag, out_dir, featurize=feat, log=log)
    x = dequantize(f, INPUT_SCALE, INPUT_ZP).astype(np.float64)
    onehot = np.eye(task.num_classes)[y] * 4 - 2
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    sol = np.linalg.lstsq(xa.T @ xa + 1.0 * np.eye(xa.shape[1]), xa.T @ onehot, rcond=None)[0]
    fh = FloatHead(sol[:-1].T.astype(np.float32).copy(), sol[-1].astype(np.float32).copy())
    calib = np.load(out_dir / FLEET_DIR / "calib_feats.npy")
    return layout, quantize_head(fh, INPUT_SCALE, INPUT_ZP, calib)
