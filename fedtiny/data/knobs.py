"""Generic drift knobs: changes of operating condition applied to any signal *before* the front end.

They are applied in a fixed order, each only when it differs from its default: shift, background, snr_db,
contrast, brightness, gain, offset. At the default condition the input object itself is returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedtiny import exactmath as em
from fedtiny.errors import DataError

GENERIC_KNOBS: dict[str, str] = {
    "gain": "multiply the signal (sensor gain), 0 < gain <= 1000 (default 1)",
    "offset": "add a constant in the signal's units (sensor DC offset), any finite value (default 0)",
    "snr_db": "add white Gaussian noise at this SNR in dB relative to each signal's mean power, -40..200 "
    "(default 200 = no noise)",
    "shift": "circular time shift along the first axis: seconds for audio with a sample rate, samples "
    "otherwise; any finite value (default 0)",
    "background": "mix in a random background clip at this RMS relative to the signal's RMS, 0..10 (default 0)",
    "brightness": "add (images), in the signal's own units, any finite value (default 0)",
    "contrast": "scale around each example's mean (images), 0 < contrast <= 100 (default 1)",
}
_DEFAULTS = {"gain": 1.0, "offset": 0.0, "snr_db": 200.0, "shift": 0.0, "background": 0.0,
             "brightness": 0.0, "contrast": 1.0}  # fmt: skip
# knob -> (low, high, low excluded)
_RANGES = {
    "gain": (0.0, 1000.0, True),
    "snr_db": (-40.0, 200.0, False),
    "background": (0.0, 10.0, False),
    "contrast": (0.0, 100.0, True),
}
_NO_NOISE_DB = 200.0  # at or above: no noise at all, so the default is exact


def default_condition() -> dict[str, float]:
    """Every generic knob at its default (the identity)."""
    return dict(_DEFAULTS)


def check_condition(cond: Mapping[str, float], where: str) -> None:
    """DataError naming ``where`` and the knob for an unknown knob, a non-finite or out-of-range value."""
    for knob, value in cond.items():
        if knob not in GENERIC_KNOBS:
            raise DataError(f"{where}: unknown knob {knob!r} (expected {', '.join(GENERIC_KNOBS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataError(f"{where}: knob {knob!r} must be a finite number, got {value!r}")
        if knob in _RANGES:
            lo, hi, open_lo = _RANGES[knob]
            if value > hi or value < lo or (open_lo and value == lo):
                raise DataError(f"{where}: knob {knob!r} = {value} out of range ({GENERIC_KNOBS[knob]})")


def _active(cond: Mapping[str, float]) -> dict[str, float]:
    out = {k: float(v) for k, v in cond.items() if float(v) != _DEFAULTS[k]}
    if out.get("snr_db", 0.0) >= _NO_NOISE_DB:
        del out["snr_db"]
    return out


def apply_condition(
    signals: list[np.ndarray] | np.ndarray,
    condition: Mapping[str, float],
    rng: np.random.Generator,
    background: Sequence[np.ndarray] = (),
    sample_rate: int | None = None,
) -> list[np.ndarray] | np.ndarray:
    """``signals`` as they would be recorded under ``condition`` (float32; the same container type).

    Random draws (noise, background clip and start) come from ``rng`` in example order: the same seed gives
    the same result. At the default condition ``signals`` itself is returned, bit for bit.
    """
    check_condition(condition, "condition")
    knobs = _active(condition)
    if not knobs:
        return signals
    if knobs.get("background", 0.0) > 0 and not background:
        raise DataError(
            "condition: knob 'background' > 0 needs background clips (the data folder's _background_noise_ "
            "or data.background)"
        )
    shift = 0
    if "shift" in knobs:  # seconds when the signals have a rate, else samples
        shift = round(knobs["shift"] * sample_rate) if sample_rate else round(knobs["shift"])
    out = [
        _apply(np.asarray(s, dtype=np.float32), i, knobs, shift, rng, background)
        for i, s in enumerate(signals)
    ]
    return np.stack(out) if isinstance(signals, np.ndarray) else out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _apply(
    x: np.ndarray,
    index: int,
    knobs: dict[str, float],
    shift: int,
    rng: np.random.Generator,
    background: Sequence[np.ndarray],
) -> np.ndarray:
    if shift:
        x = np.roll(x, shift, axis=0)
    level = knobs.get("background", 0.0)
    if level > 0:
        if x.ndim != 1:
            raise DataError(
                f"condition: knob 'background' needs 1-D signals, example {index} has shape {x.shape}"
            )
        clip = np.asarray(background[int(rng.integers(len(background)))], dtype=np.float32).ravel()
        if len(clip) >= len(x):
            start = int(rng.integers(0, len(clip) - len(x) + 1))
            seg = clip[start : start + len(x)]
        else:  # a short clip is looped
            seg = np.resize(clip, len(x))
        sig_rms, seg_rms = _rms(x), _rms(seg)
        if sig_rms > 0 and seg_rms > 0:
            x = x + seg * np.float32(level * sig_rms / seg_rms)
    if "snr_db" in knobs:
        noise = rng.standard_normal(x.shape)  # drawn even for silent signals: the stream stays aligned
        power, noise_power = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(noise**2))
        if power > 0 and noise_power > 0:
            # scaled to the exact target power, so the SNR holds for short signals too
            scale = math.sqrt(
                power / em.pow(10.0, knobs["snr_db"] / 10) / noise_power
            )  # the same bits anywhere
            x = x + (noise * scale).astype(np.float32)
    if "contrast" in knobs:
        mean = x.mean(dtype=np.float64)
        x = (mean + (x - mean) * knobs["contrast"]).astype(np.float32)
    if "brightness" in knobs:
        x = x + np.float32(knobs["brightness"])
    if "gain" in knobs:
        x = x * np.float32(knobs["gain"])
    if "offset" in knobs:
        x = x + np.float32(knobs["offset"])
    return x.astype(np.float32, copy=False)
