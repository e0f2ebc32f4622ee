"""Audio front end shared by the kws task and the Speech Commands loader (numpy only).

MFCC as a board computes it: 16 kHz, 1 s, 30 ms Hann frames (480 samples) with a 20 ms hop -> 49 frames,
512-point FFT power spectrum, 40 triangular mel filters (20 Hz - 7.6 kHz), natural log (floor 1e-6),
orthonormal DCT-II, first 10 coefficients; then the fixed per-coefficient map
``(c - MFCC_OFFSET) / MFCC_SCALE`` (about unit spread each, so one int8 input scale suits all of them).

Transcendental functions and the matrix products come from :mod:`fedtiny.exactmath` (the same bits on any CPU),
the FFTs from scipy.fft.
"""

from __future__ import annotations

import io
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from fedtiny import exactmath as em
from fedtiny.errors import TaskError

SAMPLE_RATE = 16_000
CLIP = SAMPLE_RATE  # 1 s
FRAME, HOP, NFFT, N_MEL, N_MFCC = 480, 320, 512, 40, 10
N_FRAMES = (CLIP - FRAME) // HOP + 1  # 49
MFCC_OFFSET = np.array([-35.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
MFCC_SCALE = np.array([20.0, 10.0, 4.0, 5.0, 4.0, 4.0, 4.0, 3.0, 2.0, 2.0], dtype=np.float32)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    """float32 [NFFT/2+1, N_MEL] triangular mel filterbank (HTK mel scale)."""
    mel_lo, mel_hi = (2595.0 * em.log10(1.0 + f / 700.0) for f in (20.0, 7600.0))
    edges = 700.0 * (em.pow(10.0, np.linspace(mel_lo, mel_hi, N_MEL + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    w = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return np.asarray(w.T, dtype=np.float32)


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """float32 [N_MEL, N_MFCC] orthonormal DCT-II."""
    n = np.arange(N_MEL)[:, None]
    k = np.arange(N_MFCC)[None, :]
    m = em.cos(np.pi / N_MEL * (n + 0.5) * k) * np.sqrt(2.0 / N_MEL)
    m[:, 0] /= np.sqrt(2.0)
    return np.asarray(m, dtype=np.float32)


_HANN = em.hann(FRAME + 1)[:-1].astype(np.float32)  # periodic Hann


def mfcc(audio: np.ndarray, chunk: int = 128) -> np.ndarray:
    """float32 ``[B, 49, 10, 1]`` scaled MFCCs of ``[B, 16000]`` audio in -1..1 at 16 kHz."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] != CLIP:
        raise TaskError(f"MFCC front end expects audio of shape [B, {CLIP}] at 16 kHz, got {audio.shape}")
    b = audio.shape[0]
    out = np.empty((b, N_FRAMES, N_MFCC, 1), dtype=np.float32)
    buf = np.zeros((min(chunk, b) * N_FRAMES, NFFT), dtype=np.float32)  # zero-padded frames, reused
    for s in range(0, b, chunk):
        n = min(chunk, b - s) * N_FRAMES
        frames = np.lib.stride_tricks.sliding_window_view(audio[s : s + chunk], FRAME, axis=1)[:, ::HOP]
        np.multiply(frames.reshape(n, FRAME), _HANN, out=buf[:n, :FRAME])
        spec = sfft.rfft(buf[:n], axis=1)
        power = spec.real**2 + spec.imag**2
        logmel = em.log(em.matmul_ordered(power, _mel_matrix()) + np.float32(1e-6)).astype(np.float32)
        coef = (em.matmul_ordered(logmel, _dct_matrix()) - MFCC_OFFSET) / MFCC_SCALE
        out[s : s + chunk, :, :, 0] = coef.reshape(-1, N_FRAMES, N_MFCC)
    return out


def fit_clip(x: np.ndarray, length: int = CLIP) -> np.ndarray:
    """Pad with zeros or centre-crop a 1-D signal to ``length`` samples."""
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start : start + length]
    return np.pad(x, (0, length - len(x)))


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of the last axis from ``rate`` to ``target`` Hz (float32)."""
    if rate == target:
        return np.asarray(x, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return np.asarray(resample_poly(x, target // g, rate // g, axis=-1), dtype=np.float32)


def read_wav(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples in -1..1 and the sample rate of a PCM WAV file (path or bytes); stdlib wave."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), "rb") as w:
            rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        raise TaskError(f"cannot read WAV {name}: {e}") from None
    if width == 2:
        x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        x = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise TaskError(f"WAV {name}: unsupported sample width {width} bytes (expected 1, 2 or 4)")
    if ch > 1:
        x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1)
    return x, rate
