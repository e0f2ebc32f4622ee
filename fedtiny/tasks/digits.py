"""Handwritten digits from scikit-learn's bundled 8x8 set, seen through a misaligned, drifting camera.

``generate`` picks an image of the requested class from ``sklearn.datasets.load_digits`` (1,797 images,
offline), deterministically with the rng, then renders it into a 16 x 16 frame: the 8 x 8 digit is scaled
to about 12 x 12 pixels, centred, with small per-example random rotation (+-8 deg), scale (+-10 %) and
shift (+-1 px), bilinear sampling; then the condition's geometry and photometry are applied. Pixel values
are in 0..1 (clipped, as a sensor saturates). Input shape (16, 16, 1); 10 classes "0".."9".

Parameters: ``subset`` = "all" (default), "train" or "test" (a fixed split: every 5th image is test).

Drift knobs (floats):
  rotation_deg  camera rotation in degrees, default 0
  contrast      contrast gain, default 1.0
  brightness    brightness offset added to 0..1 pixels, default 0.0
  noise         pixel noise std (0..1 scale), default 0.05
  shift_px      sensor misalignment: translation down and right in pixels, default 0
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fedtiny import exactmath as em
from fedtiny.errors import TaskError
from fedtiny.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover
    import keras

SIZE = 16  # output frame, pixels
DIGIT_PX = 12.0  # rendered digit size, pixels


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 [1797, 8, 8] in 0..1 and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def render(
    images: np.ndarray, angle_deg: np.ndarray, scale: np.ndarray, shift: np.ndarray, size: int = SIZE
) -> np.ndarray:
    """Bilinear render of ``[B, h, w]`` images into ``[B, size, size]`` with per-example rotation (deg),
    scale (output pixels per source pixel) and shift ``[B, 2]`` (rows, cols); zeros outside the source."""
    b, h, w = images.shape
    pad = np.zeros((b, h + 2, w + 2), dtype=np.float32)
    pad[:, 1:-1, 1:-1] = images
    c_out = (size - 1) / 2
    r, c = np.meshgrid(np.arange(size) - c_out, np.arange(size) - c_out, indexing="ij")
    r = r[None] - shift[:, 0, None, None]
    c = c[None] - shift[:, 1, None, None]
    th = np.deg2rad(angle_deg)[:, None, None]
    sin, cos = em.sincos(th)
    s = scale[:, None, None]
    sr = (cos * r - sin * c) / s + (h - 1) / 2 + 1  # inverse map into the padded source
    sc = (sin * r + cos * c) / s + (w - 1) / 2 + 1
    sr = np.clip(sr, 0, h + 1 - 1e-6)
    sc = np.clip(sc, 0, w + 1 - 1e-6)
    r0, c0 = np.floor(sr).astype(np.int64), np.floor(sc).astype(np.int64)
    fr, fc = (sr - r0).astype(np.float32), (sc - c0).astype(np.float32)
    r1, c1 = np.minimum(r0 + 1, h + 1), np.minimum(c0 + 1, w + 1)
    bi = np.arange(b)[:, None, None]
    top = pad[bi, r0, c0] * (1 - fc) + pad[bi, r0, c1] * fc
    bot = pad[bi, r1, c0] * (1 - fc) + pad[bi, r1, c1] * fc
    return np.asarray(top * (1 - fr) + bot * fr, dtype=np.float32)


class DigitsTask(Task):
    """10-class digit recognition on 16 x 16 frames rendered from scikit-learn's 8 x 8 digits."""

    name = "digits"
    classes = tuple(str(i) for i in range(10))
    input_shape = (SIZE, SIZE, 1)
    drift_knobs = {
        "rotation_deg": "camera rotation in degrees (default 0)",
        "contrast": "contrast gain, dimensionless (default 1.0)",
        "brightness": "brightness offset on 0..1 pixels (default 0.0)",
        "noise": "pixel noise std on the 0..1 scale (default 0.05)",
        "shift_px": "sensor misalignment: translation down and right in pixels (default 0)",
    }
    knob_ranges = {
        "rotation_deg": (-180.0, 180.0),
        "contrast": (0.0, 10.0),
        "brightness": (-1.0, 1.0),
        "noise": (0.0, 1.0),
        "shift_px": (-8.0, 8.0),  # half the 16-pixel frame
    }

    def __init__(self, subset: str = "all") -> None:
        if subset not in ("all", "train", "test"):
            raise TaskError(f"digits: subset must be 'all', 'train' or 'test', got {subset!r}")
        self.subset = subset
        images, targets = _digits()
        keep = np.arange(len(targets))
        if subset != "all":
            keep = keep[(keep % 5 == 0) == (subset == "test")]
        self._images = images
        per_class = [keep[targets[keep] == c] for c in range(10)]
        self._counts = np.array([len(p) for p in per_class])
        self._table = np.zeros((10, self._counts.max()), dtype=np.int64)
        for c, p in enumerate(per_class):
            self._table[c, : len(p)] = p

    def default_condition(self) -> dict[str, float]:
        return {"rotation_deg": 0.0, "contrast": 1.0, "brightness": 0.0, "noise": 0.05, "shift_px": 0.0}

    def generate(
        self, labels: np.ndarray, rng: np.random.Generator, condition: Mapping[str, float] | None = None
    ) -> np.ndarray:
        cond = self.resolve_condition(condition)
        if cond["noise"] < 0:
            raise TaskError(f"digits: noise must be >= 0, got {cond['noise']}")
        labels = self.check_labels(labels)
        b = len(labels)
        pick = np.floor(rng.random(b) * self._counts[labels]).astype(np.int64)
        src = self._images[self._table[labels, pick]]
        angle = cond["rotation_deg"] + rng.uniform(-8, 8, b)
        scale = DIGIT_PX / 8 * rng.uniform(0.9, 1.1, b)
        shift = cond["shift_px"] + rng.uniform(-1, 1, (b, 2))
        img = render(src, angle, scale, shift)
        contrast = cond["contrast"] * rng.uniform(0.9, 1.1, b)
        img = contrast[:, None, None].astype(np.float32) * img + np.float32(cond["brightness"])
        img += np.float32(cond["noise"]) * rng.standard_normal(img.shape, dtype=np.float32)
        return np.asarray(np.clip(img, 0.0, 1.0)[..., None], dtype=np.float32)

    def build_model(self, head_inputs: int = 64, *, batch_size: int | None = 1) -> keras.Model:
        import keras

        inp = keras.Input(shape=self.input_shape, batch_size=batch_size, name="image")
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
        x = keras.layers.MaxPooling2D(2)(x)  # 8x8x8
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)  # 4x4x16
        x = keras.layers.Reshape((4 * 4 * 16,))(x)
        x = keras.layers.Dense(head_inputs, activation="relu", name="features")(x)
        out = keras.layers.Dense(len(self.classes), name="head")(x)
        return keras.Model(inp, out, name="digits")
