"""The speech-commands / TinyML keyword-spotting MFCC in numpy, step for step as tf.signal computes it.

``tf.signal.stft`` (periodic Hann window, frames zero-padded to ``fft``, no end padding) -> magnitude ->
``tf.signal.linear_to_mel_weight_matrix`` (HTK mel, triangles linear in mel, DC bin zeroed) ->
``log(mel + log_offset)`` -> ``tf.signal.mfccs_from_log_mel_spectrograms`` (DCT-II scaled by sqrt(2/N) for every
coefficient, as TensorFlow does; scipy's orthonormal DCT differs in coefficient 0 by sqrt(2)).

Transcendental functions, magnitudes and matrix products come from :mod:`fedtiny.exactmath` (the same bits on any
CPU), the FFT from scipy.fft.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft

from fedtiny import exactmath as em
from fedtiny.errors import DataError

MFCC_DEFAULTS: dict[str, float | int] = {
    "sample_rate": 16_000,
    "clip_ms": 1000,
    "frame_ms": 30,
    "step_ms": 20,
    "fft": 512,
    "mel_bins": 40,
    "fmin": 20.0,
    "fmax": 4000.0,
    "coefficients": 10,
    "log_offset": 1e-6,
}
_INTS = ("sample_rate", "fft", "mel_bins", "coefficients")


def _num(key: str, value: Any) -> float:
    """A finite positive number (fmin may be 0); integers where the parameter counts something."""
    is_num = isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))
    if not is_num or value < 0 or (value == 0 and key != "fmin"):
        raise DataError(f"front end mfcc: {key} must be a positive number, got {value!r}")
    if key in _INTS and value != int(value):
        raise DataError(f"front end mfcc: {key} must be an integer, got {value!r}")
    return float(value)


class Mfcc:
    """MFCC of ``[N, clip]`` float32 audio -> ``[N, frames, coefficients, 1]``."""

    def __init__(self, **params: Any) -> None:
        p = {**MFCC_DEFAULTS, **{k: _num(k, v) for k, v in params.items()}}
        self.sample_rate, self.fft = int(p["sample_rate"]), int(p["fft"])
        self.mel_bins, self.coefficients = int(p["mel_bins"]), int(p["coefficients"])
        self.clip_ms, self.frame_ms, self.step_ms = p["clip_ms"], p["frame_ms"], p["step_ms"]
        self.fmin, self.fmax, self.log_offset = float(p["fmin"]), float(p["fmax"]), float(p["log_offset"])
        self.clip = round(self.sample_rate * self.clip_ms / 1000)
        self.frame = round(self.sample_rate * self.frame_ms / 1000)
        self.step = round(self.sample_rate * self.step_ms / 1000)
        if not 0 < self.frame <= self.clip or self.step < 1:
            raise DataError(f"front end mfcc: need 1 <= frame_ms <= clip_ms and step_ms >= 1 sample, got {p}")
        if self.fft < self.frame:
            raise DataError(f"front end mfcc: fft {self.fft} is shorter than a frame ({self.frame} samples)")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise DataError(
                f"front end mfcc: need fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}"
            )
        if self.coefficients > self.mel_bins:
            raise DataError(f"front end mfcc: coefficients {self.coefficients} > mel_bins {self.mel_bins}")
        self.frames = (self.clip - self.frame) // self.step + 1
        n = np.arange(self.frame)
        self.window = (0.5 - 0.5 * em.cos(2 * np.pi * n / self.frame)).astype(np.float32)  # periodic Hann
        self.mel = _mel_matrix(self.mel_bins, self.fft // 2 + 1, self.sample_rate, self.fmin, self.fmax)
        k = np.arange(self.coefficients)[None, :]
        m = np.arange(self.mel_bins)[:, None]
        dct = em.cos(np.pi * k * (2 * m + 1) / (2 * self.mel_bins)) * np.sqrt(2.0 / self.mel_bins)
        self.dct = dct.astype(np.float32)

    def fit(self, x: np.ndarray) -> np.ndarray:
        """Pad with zeros at the end or centre-crop one clip to ``clip_ms``."""
        if len(x) >= self.clip:
            start = (len(x) - self.clip) // 2
            return x[start : start + self.clip]
        return np.pad(x, (0, self.clip - len(x)))

    def __call__(self, audio: np.ndarray, chunk: int = 256) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        out = np.empty((len(audio), self.frames, self.coefficients, 1), dtype=np.float32)
        for s in range(0, len(audio), chunk):  # chunks bound the FFT buffer's memory
            frames = np.lib.stride_tricks.sliding_window_view(audio[s : s + chunk], self.frame, axis=1)
            frames = frames[:, :: self.step][:, : self.frames] * self.window
            mag = em.abs_complex(sfft.rfft(frames, n=self.fft, axis=2)).astype(np.float32)
            mel = em.matmul_ordered(mag, self.mel) + np.float32(self.log_offset)
            logmel = em.log(mel).astype(np.float32)
            out[s : s + chunk, :, :, 0] = em.matmul_ordered(logmel, self.dct)
        return out


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return np.asarray(1127.0 * em.log1p(np.asarray(f, dtype=np.float64) / 700.0))


def _mel_matrix(mel_bins: int, spec_bins: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """float32 ``[spec_bins, mel_bins]`` as tf.signal.linear_to_mel_weight_matrix."""
    freqs = np.linspace(0.0, rate / 2.0, spec_bins)[1:]  # HTK leaves out the DC bin
    spec_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), mel_bins + 2)
    lo, mid, hi = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    w = np.maximum(0.0, np.minimum((spec_mel - lo) / (mid - lo), (hi - spec_mel) / (hi - mid)))
    return np.pad(w, [[1, 0], [0, 0]]).astype(np.float32)
