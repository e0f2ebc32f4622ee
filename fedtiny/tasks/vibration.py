"""Bearing fault classification from an accelerometer: the quickstart task (physics-based generator).

Signal (fs = 12 kHz, 4096-sample window, units of g): shaft harmonics (1x, 2x; a strong 1x for imbalance)
plus, for localized faults, a train of decaying structural-resonance impulses at the fault rate with 1.5 %
slip jitter. Fault rates for the CWRU 6205 drive-end bearing (n = 9 balls, d = 7.94 mm, D = 39.05 mm,
contact angle 0): BPFO = n/2 f_r (1 - d/D), BPFI = n/2 f_r (1 + d/D), BSF = D/(2d) f_r (1 - (d/D)^2).
Outer-race impulses have constant amplitude (fixed load zone); inner-race impulses are amplitude-modulated at
f_r and ball impulses (rate 2 x BSF, the ball strikes both races) at the cage rate FTF = f_r/2 (1 - d/D),
with modulation depth ``load``. Broadband noise is added, then sensor gain and DC offset.

Classes: normal, inner_race, outer_race, ball, imbalance.

Model input (the board's DSP front end, :func:`front_end`): a 32 x 32 log modulation spectrogram.
STFT (64-sample Hann frames, hop 16) gives 32 carrier bands of 187.5 Hz (0-6 kHz, rows); column 0 is each
band's mean magnitude (the ordinary spectrum: where the resonance sits), columns 1-31 the magnitude spectrum
of the band envelope over the window (modulation frequency 2.9-363 Hz, 11.7 Hz per column: the fault
rates). Values are ``ln(1e-4 + m) / 4 + 1``, a fixed affine map (no per-example normalization, so gain
drift reaches the model as it would on a board).

Transcendental functions come from :mod:`fedtiny.exactmath` (the same bits on any CPU), the FFTs from scipy.fft.

Drift knobs (floats):
  speed_hz      shaft speed in Hz, default 29.95 (1797 rpm, CWRU 0 hp)
  gain          sensor gain (dimensionless), default 1.0
  offset        sensor DC offset in g, default 0.0
  noise         broadband noise std in g, default 0.05
  resonance_hz  structural resonance excited by impacts, Hz, default 3000 (shifts after re-mounting)
  load          load-zone modulation depth 0..1, default 0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft

from fedtiny import exactmath as em
from fedtiny.errors import TaskError
from fedtiny.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover
    import keras

FS = 12_000  # Hz
WINDOW = 4096  # samples per example (0.34 s)
N_BALLS, BALL_D, PITCH_D = 9, 7.94, 39.05  # CWRU 6205-2RS JEM SKF, mm
FRAME, HOP, MOD_NFFT = 64, 16, 256
N_BANDS, N_MOD = 32, 31  # carrier bands (rows) and modulation columns after column 0
MOD_POOL = 4  # modulation FFT bins averaged per column
IR_LEN = 256  # samples of the resonance impulse response (>= 10 decay constants)
CLASSES = ("normal", "inner_race", "outer_race", "ball", "imbalance")


def fault_frequencies(speed_hz: float | np.ndarray) -> dict[str, np.ndarray]:
    """Characteristic frequencies (Hz) of the CWRU 6205 bearing at shaft speed ``speed_hz``."""
    r = BALL_D / PITCH_D  # cos(0) = 1
    speed_hz = np.asarray(speed_hz, dtype=np.float64)
    return {
        "bpfo": N_BALLS / 2 * speed_hz * (1 - r),
        "bpfi": N_BALLS / 2 * speed_hz * (1 + r),
        "bsf": PITCH_D / (2 * BALL_D) * speed_hz * (1 - r * r),
        "ftf": speed_hz / 2 * (1 - r),
    }


def raw_signal(
    labels: np.ndarray,
    rng: np.random.Generator,
    cond: Mapping[str, float],
    n_samples: int = WINDOW,
    fs: float = FS,
) -> np.ndarray:
    """float32 ``[B, n_samples]`` accelerometer windows (g) for ``labels`` under a *complete* condition."""
    labels = np.asarray(labels, dtype=np.int64)
    b = int(labels.shape[0])
    if b == 0:
        return np.zeros((0, n_samples), dtype=np.float32)
    t = np.arange(n_samples) / fs
    speed: np.ndarray = cond["speed_hz"] * (
        1 + 0.01 * rng.standard_normal(b)
    )  # small per-example speed variation
    ff = fault_frequencies(speed)
    # shaft harmonics: 1x and 2x, imbalance has a strong 1x
    a1 = em.exp(rng.uniform(em.log(0.02), em.log(0.12), b))  # residual unbalance of a healthy machine
    a1 = np.where(labels == 4, em.exp(rng.uniform(em.log(0.1), em.log(0.6), b)), a1)
    a2 = rng.uniform(0.01, 0.04, b)
    ph: np.ndarray = rng.uniform(0, 2 * np.pi, (b, 2))
    s1, c1 = _sincos(speed, ph[:, 0], n_samples, fs)
    s2 = 2 * s1 * c1  # sin and cos of the 2x angle, then shift by an independent phase
    c2 = 1 - 2 * s1 * s1
    x = a1[:, None].astype(np.float32) * s1
    sp, cp = em.sincos(ph[:, 1])
    x += (a2 * cp)[:, None].astype(np.float32) * s2
    x += (a2 * sp)[:, None].astype(np.float32) * c2
    # localized faults: impulse trains at the fault rate
    rate = np.select([labels == 1, labels == 2, labels == 3], [ff["bpfi"], ff["bpfo"], 2 * ff["bsf"]], 1.0)
    mod_f = np.select([labels == 1, labels == 3], [speed, ff["ftf"]], 0.0)
    faulty = (labels >= 1) & (labels <= 3)
    period = 1.0 / rate
    n_imp = int(np.ceil(n_samples / fs * rate.max())) + 2
    jitter = 1 + 0.015 * rng.standard_normal((b, n_imp))
    times = (
        rng.uniform(0, 1, (b, 1)) * period[:, None]
        + np.cumsum(period[:, None] * jitter, axis=1)
        - period[:, None]
    )
    severity = em.exp(rng.uniform(em.log(0.08), em.log(1.0), b)) * faulty  # incipient to severe
    depth = np.clip(cond["load"], 0.0, 1.0) * np.where(labels == 2, 0.0, 1.0)
    mod_ph = rng.uniform(0, 2 * np.pi, b)
    amp = severity[:, None] * (
        1 - depth[:, None] * 0.5 * (1 - em.cos(2 * np.pi * mod_f[:, None] * times + mod_ph[:, None]))
    )
    amp *= rng.uniform(0.8, 1.2, (b, n_imp))  # impact-to-impact variation
    idx = np.rint(times * fs).astype(np.int64)
    ok = (idx >= 0) & (idx < n_samples)
    deltas = np.zeros((b, n_samples), dtype=np.float32)
    rows = np.broadcast_to(np.arange(b)[:, None], idx.shape)
    deltas[rows[ok], idx[ok]] = amp[ok]
    # structural resonance impulse response (damping ratio ~5 %), slightly different per example
    f_res = cond["resonance_hz"] * (1 + 0.03 * rng.standard_normal(b))
    zeta = rng.uniform(0.04, 0.07, b)
    th = t[:IR_LEN]
    h = em.exp(-2 * np.pi * zeta[:, None] * f_res[:, None] * th) * em.sin(2 * np.pi * f_res[:, None] * th)
    fi = np.flatnonzero(faulty)  # only fault classes have impulses: skip the FFT for the others
    spec = em.mul_complex(
        sfft.rfft(deltas[fi], axis=1), sfft.rfft(h[fi].astype(np.float32), n=n_samples, axis=1)
    )
    x[fi] += sfft.irfft(spec, n=n_samples, axis=1)
    # background vibration from nearby machines varies from place to place
    noise = cond["noise"] * em.exp(rng.uniform(em.log(0.5), em.log(2.0), b))
    x += noise[:, None].astype(np.float32) * rng.standard_normal((b, n_samples), dtype=np.float32)
    gain = cond["gain"] * rng.uniform(0.95, 1.05, b)  # mounting / sensitivity spread
    out: np.ndarray = gain[:, None].astype(np.float32) * x + np.float32(cond["offset"])
    return out


def _sincos(freq: np.ndarray, phase: np.ndarray, n: int, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 sin and cos of ``2 pi freq[b] k / fs + phase[b]``, ``[B, n]``, by angle addition (fast)."""
    blk = 64
    nb = -(-n // blk)
    w = 2 * np.pi * np.asarray(freq, dtype=np.float64)[:, None] / fs
    a = w * (blk * np.arange(nb)) + np.asarray(phase)[:, None]  # coarse angles [B, nb]
    c = w * np.arange(blk)  # fine angles [B, blk]
    (sa, ca), (sc, cc) = em.sincos(a), em.sincos(c)
    sa, ca = sa.astype(np.float32)[:, :, None], ca.astype(np.float32)[:, :, None]
    sc, cc = sc.astype(np.float32)[:, None, :], cc.astype(np.float32)[:, None, :]
    b = len(w)
    s = (sa * cc + ca * sc).reshape(b, nb * blk)[:, :n]
    co = (ca * cc - sa * sc).reshape(b, nb * blk)[:, :n]
    return s, co


_WIN = em.hann(FRAME + 2)[1:-1].astype(np.float32)


def front_end(x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """float32 ``[B, 32, 32, 1]`` log modulation spectrogram of ``[B, 4096]`` windows at 12 kHz."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != WINDOW:
        raise TaskError(f"vibration front end expects windows of shape [B, {WINDOW}], got {x.shape}")
    out = np.empty((x.shape[0], N_BANDS, N_MOD + 1, 1), dtype=np.float32)
    n_frames = (WINDOW - FRAME) // HOP + 1
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        frames = np.lib.stride_tricks.sliding_window_view(xc, FRAME, axis=1)[:, ::HOP][:, :n_frames]
        spec = sfft.rfft(frames * _WIN, axis=2)[:, :, :N_BANDS]
        env = em.abs_complex(spec).astype(np.float32) / (FRAME / 4)  # [b, T, bands]
        level = env.mean(axis=1)  # [b, bands]
        mod = (
            em.abs_complex(sfft.rfft(env - level[:, None, :], n=MOD_NFFT, axis=1)).astype(np.float32)
            / n_frames
        )
        mod = mod[:, 1 : 1 + N_MOD * MOD_POOL].reshape(len(xc), N_MOD, MOD_POOL, N_BANDS).mean(axis=2)
        feat = np.concatenate([level[:, None, :], mod], axis=1)  # [b, 32 cols, bands]
        out[s : s + chunk, :, :, 0] = em.log(1e-4 + feat.transpose(0, 2, 1)).astype(np.float32) / 4 + 1
    return out


class VibrationTask(Task):
    """Bearing fault classification (5 classes) from a physics-based accelerometer signal."""

    name = "vibration"
    classes = CLASSES
    input_shape = (N_BANDS, N_MOD + 1, 1)
    drift_knobs = {
        "speed_hz": "shaft speed in Hz (default 29.95 = 1797 rpm)",
        "gain": "accelerometer gain, dimensionless (default 1.0)",
        "offset": "accelerometer DC offset in g (default 0.0)",
        "noise": "broadband noise std in g (default 0.05)",
        "resonance_hz": "structural resonance excited by impacts in Hz (default 3000; shifts on re-mounting)",
        "load": "load-zone amplitude-modulation depth 0..1 (default 0.5)",
    }
    knob_ranges = {
        "speed_hz": (1.0, 200.0),  # 60-12,000 rpm
        "gain": (0.0, 100.0),
        "offset": (-16.0, 16.0),  # an accelerometer's full scale
        "noise": (0.0, 10.0),
        "resonance_hz": (10.0, 5990.0),  # below Nyquist (6 kHz)
        "load": (0.0, 1.0),
    }

    def default_condition(self) -> dict[str, float]:
        return {
            "speed_hz": 29.95,
            "gain": 1.0,
            "offset": 0.0,
            "noise": 0.05,
            "resonance_hz": 3000.0,
            "load": 0.5,
        }

    def raw(
        self, labels: np.ndarray, rng: np.random.Generator, condition: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """float32 ``[B, 4096]`` raw accelerometer windows (g) at 12 kHz, before the front end."""
        cond = self.resolve_condition(condition)
        if cond["speed_hz"] <= 0 or cond["resonance_hz"] <= 0 or cond["resonance_hz"] >= FS / 2:
            raise TaskError(
                f"vibration: speed_hz must be > 0 and resonance_hz in (0, {FS // 2}), got {cond['speed_hz']}, "
                f"{cond['resonance_hz']}"
            )
        if cond["noise"] < 0:
            raise TaskError(f"vibration: noise must be >= 0, got {cond['noise']}")
        return raw_signal(self.check_labels(labels), rng, cond)

    def generate(
        self, labels: np.ndarray, rng: np.random.Generator, condition: Mapping[str, float] | None = None
    ) -> np.ndarray:
        return front_end(self.raw(labels, rng, condition))

    def build_model(self, head_inputs: int = 64, *, batch_size: int | None = 1) -> keras.Model:
        import keras

        inp = keras.Input(shape=self.input_shape, batch_size=batch_size, name="spectrum")
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)  # 16x16x8
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # 8x8x16
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)  # 4x4x32
        x = keras.layers.Reshape((4 * 4 * 32,))(x)
        x = keras.layers.Dense(head_inputs, activation="relu", name="features")(x)
        out = keras.layers.Dense(len(self.classes), name="head")(x)
        return keras.Model(inp, out, name="vibration")
