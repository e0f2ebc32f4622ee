"""Front ends: a list of raw signals -> float32 model inputs, batch first (numpy only).

``none`` stacks inputs that already are model inputs, ``mfcc`` is the speech-commands / TinyML keyword-spotting
MFCC (as the tf.signal pipeline computes it), ``vibration`` the vibration task's log modulation spectrogram,
and ``"module:function"`` a user's own function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedtiny.data._mfcc import MFCC_DEFAULTS, Mfcc
from fedtiny.errors import DataError, TaskError
from fedtiny.tasks.audio import resample

FRONT_ENDS = ("none", "mfcc", "vibration")
Signals = list[np.ndarray] | np.ndarray


class FrontEnd:
    """Turns signals into model inputs; ``describe()`` says what it computes in one line."""

    name = "front end"

    def __call__(self, signals: Signals) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def _stack(where: str, signals: Signals) -> np.ndarray:
    """float32 ``[N, ...]``; DataError naming the first example whose shape differs from the first one's."""
    if isinstance(signals, np.ndarray):
        return np.asarray(signals, dtype=np.float32)
    if len(signals) == 0:
        raise DataError(f"{where}: no examples")
    shape = np.shape(signals[0])
    for i, s in enumerate(signals):
        if np.shape(s) != shape:
            raise DataError(
                f"{where}: example {i} has shape {np.shape(s)}, example 0 has {shape} (expected one shape)"
            )
    return np.stack([np.asarray(s, dtype=np.float32) for s in signals])


class NoFrontEnd(FrontEnd):
    """The signals already are model inputs: stacked, as float32."""

    name = "none"

    def __call__(self, signals: Signals) -> np.ndarray:
        return _stack("front end none", signals)

    def describe(self) -> str:
        return "none: the recordings are model inputs (stacked as float32)"


class MfccFrontEnd(FrontEnd):
    """Keyword-spotting MFCC ``[N, frames, coefficients, 1]``; signals at another rate are resampled first."""

    name = "mfcc"

    def __init__(self, params: Mapping[str, Any], data_rate: int | None) -> None:
        self.mfcc = Mfcc(**params)
        self.data_rate = data_rate

    def __call__(self, signals: Signals) -> np.ndarray:
        rate = self.mfcc.sample_rate
        clips = []
        for i, s in enumerate(signals):
            x = np.asarray(s, dtype=np.float32)
            if x.ndim == 2 and 1 in x.shape:
                x = x.ravel()
            if x.ndim != 1:
                raise DataError(
                    f"front end mfcc: example {i} has shape {x.shape} (expected one audio channel)"
                )
            if self.data_rate and self.data_rate != rate:
                x = resample(x, self.data_rate, rate)
            clips.append(self.mfcc.fit(x))
        if not clips:
            raise DataError("front end mfcc: no examples")
        return self.mfcc(np.stack(clips))

    def describe(self) -> str:
        m = self.mfcc
        resampled = (
            f", resampled from {self.data_rate} Hz"
            if self.data_rate and self.data_rate != m.sample_rate
            else ""
        )
        return (
            f"mfcc: {m.sample_rate} Hz{resampled}, {m.clip_ms} ms clips, {m.frame_ms}/{m.step_ms} ms frames, "
            f"FFT {m.fft}, {m.mel_bins} mel bins {m.fmin:g}-{m.fmax:g} Hz, {m.coefficients} coefficients "
            f"-> [{m.frames}, {m.coefficients}, 1]"
        )


class VibrationFrontEnd(FrontEnd):
    """The vibration task's front end: 4096-sample windows at 12 kHz -> ``[N, 32, 32, 1]``."""

    name = "vibration"

    def __init__(self, data_rate: int | None) -> None:
        self.data_rate = data_rate

    def __call__(self, signals: Signals) -> np.ndarray:
        from fedtiny.tasks.vibration import FS, front_end

        if self.data_rate and self.data_rate != FS:
            signals = [resample(np.asarray(s), self.data_rate, FS) for s in signals]
        try:
            return front_end(_stack("front end vibration", signals))
        except TaskError as e:
            raise DataError(f"front end vibration: {e}") from None

    def describe(self) -> str:
        return "vibration: 4096-sample windows at 12 kHz -> log modulation spectrogram [32, 32, 1]"


class UserFrontEnd(FrontEnd):
    """A user's ``module:function``, called with the list of signals (and the params as keyword arguments)."""

    def __init__(self, spec: str, params: Mapping[str, Any]) -> None:
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise DataError(f"front end {spec!r}: cannot import ({e}; expected 'module:function')") from None
        if not callable(fn):
            raise DataError(f"front end {spec!r}: {attr} is not a function")
        self.fn: Callable[..., Any] = fn
        self.name, self.params = spec, dict(params)

    def __call__(self, signals: Signals) -> np.ndarray:
        n = len(signals)
        out = np.asarray(self.fn(list(signals), **self.params))
        if out.dtype.kind != "f" or out.ndim < 2 or out.shape[0] != n:
            raise DataError(
                f"front end {self.name!r}: returned {out.dtype} {out.shape} "
                f"(expected a float array with batch first, [{n}, ...])"
            )
        if not np.all(np.isfinite(out)):
            raise DataError(f"front end {self.name!r}: returned NaN or Inf")
        return out.astype(np.float32)

    def describe(self) -> str:
        return f"{self.name}: a user's front end" + (f" with {self.params}" if self.params else "")


def make_front_end(name: str, params: Mapping[str, Any], sample_rate: int | None = None) -> FrontEnd:
    """The front end ``name`` with ``params``; ``sample_rate`` is the recordings' rate (audio is resampled)."""
    if name == "none" or name == "vibration":
        if params:
            raise DataError(f"front end {name}: takes no parameters, got {', '.join(sorted(params))}")
        return NoFrontEnd() if name == "none" else VibrationFrontEnd(sample_rate)
    if name == "mfcc":
        unknown = sorted(set(params) - set(MFCC_DEFAULTS))
        if unknown:
            raise DataError(
                f"front end mfcc: unknown parameter {unknown[0]!r} (valid: {', '.join(MFCC_DEFAULTS)})"
            )
        return MfccFrontEnd(params, sample_rate)
    if ":" in name:
        return UserFrontEnd(name, params)
    raise DataError(f"unknown front end {name!r} (expected {', '.join(FRONT_ENDS)} or 'module:function')")
