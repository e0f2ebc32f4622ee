"""Front ends (none, mfcc checked against tf.signal, vibration, a user's module:function) and drift knobs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedtiny import DataError
from fedtiny.data import GENERIC_KNOBS, apply_condition, check_condition, default_condition, make_front_end

RNG = np.random.default_rng(0)
T = np.arange(16_000) / 16_000
AUDIO = np.stack(
    [
        0.3 * np.sin(2 * np.pi * 440 * T) * np.exp(-3 * T)
        + 1e-3 * RNG.standard_normal(16_000),  # decaying tone
        0.05 * RNG.standard_normal(16_000),  # noise
        np.zeros(16_000),  # silence: log(0 + offset)
        0.5 * np.sign(np.sin(2 * np.pi * 97 * T)) * ((T > 0.4) & (T < 0.6))
        + 0.01 * RNG.standard_normal(16_000),
        RNG.uniform(-1, 1, 16_000),  # full scale
    ]
).astype(np.float32)


def tf_mfcc(
    audio: np.ndarray, rate: int, frame: int, step: int, fft: int, mel: int, lo: float, hi: float, n: int
) -> np.ndarray:
    """The tf.signal keyword-spotting pipeline (speech-commands / TinyML KWS)."""
    tf = pytest.importorskip("tensorflow")
    mag = tf.abs(tf.signal.stft(audio, frame, step, fft_length=fft))  # periodic Hann window by default
    weights = tf.signal.linear_to_mel_weight_matrix(mel, fft // 2 + 1, rate, lo, hi)
    log_mel = tf.math.log(tf.tensordot(mag, weights, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :n].numpy()[..., None]


def test_mfcc_matches_tf_signal() -> None:
    """Both run in float32; measured max |diff| 3.1e-5 on MFCCs up to ~120 in magnitude (tolerance 1e-3).

    (On a pure tone without any noise, near-empty mel bands make log() amplify float32 rounding: there
    TensorFlow itself differs from a float64 reference by ~0.02, and so do we.)
    """
    ours = make_front_end("mfcc", {})(list(AUDIO))
    ref = tf_mfcc(AUDIO, 16_000, 480, 320, 512, 40, 20.0, 4000.0, 10)
    assert ours.shape == ref.shape == (5, 49, 10, 1) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-3
    params = {"sample_rate": 8000, "frame_ms": 25, "step_ms": 10, "fft": 256, "mel_bins": 32, "fmin": 0,
              "fmax": 4000, "coefficients": 13}  # fmt: skip
    ours = make_front_end("mfcc", params)(list(AUDIO[:, :8000]))
    ref = tf_mfcc(AUDIO[:, :8000], 8000, 200, 80, 256, 32, 0.0, 4000.0, 13)
    assert ours.shape == ref.shape == (5, 98, 13, 1)
    assert np.abs(ours - ref).max() < 1e-3


def test_mfcc_clips_resampling_and_params() -> None:
    fe = make_front_end("mfcc", {})
    assert "49, 10, 1" in fe.describe()
    short, long = (
        AUDIO[1][:12_000],
        np.concatenate([np.zeros(2000, np.float32), AUDIO[1], np.zeros(2000, np.float32)]),
    )
    out = fe([short, long, AUDIO[1][:, None]])
    np.testing.assert_array_equal(out[2], fe([AUDIO[1]])[0])  # [T, 1] is one channel
    np.testing.assert_array_equal(out[1], out[2])  # centre-cropped
    np.testing.assert_array_equal(out[0, :30], out[2, :30])  # padded at the end: early frames unchanged
    at8k = make_front_end("mfcc", {}, sample_rate=8000)  # the data's rate: resampled to 16 kHz first
    assert at8k([AUDIO[1][::2]]).shape == (1, 49, 10, 1) and "resampled from 8000 Hz" in at8k.describe()
    with pytest.raises(
        DataError, match=r"unknown parameter 'hop_ms' \(valid: sample_rate, clip_ms, frame_ms"
    ):
        make_front_end("mfcc", {"hop_ms": 10})
    for bad in (
        {"fft": 256},
        {"fmax": 9000},
        {"coefficients": 50},
        {"mel_bins": 0},
        {"fft": 512.5},
        {"fmin": True},
    ):
        with pytest.raises(DataError, match="front end mfcc: "):
            make_front_end("mfcc", bad)
    with pytest.raises(DataError, match=r"example 1 has shape \(2, 100\)"):
        fe([AUDIO[0], np.zeros((2, 100))])


def test_none_and_vibration() -> None:
    x = [np.ones((3, 2)), np.zeros((3, 2))]
    out = make_front_end("none", {})(x)
    assert out.dtype == np.float32 and out.shape == (2, 3, 2)
    with pytest.raises(DataError, match=r"example 2 has shape \(2, 3\), example 0 has \(3, 2\)"):
        make_front_end("none", {})([*x, np.zeros((2, 3))])
    with pytest.raises(DataError, match="front end none: takes no parameters, got fft"):
        make_front_end("none", {"fft": 1})
    from fedtiny.tasks.vibration import front_end

    windows = RNG.standard_normal((2, 4096)).astype(np.float32)
    np.testing.assert_array_equal(make_front_end("vibration", {})(list(windows)), front_end(windows))
    assert make_front_end("vibration", {}, sample_rate=24_000)([RNG.standard_normal(8192)]).shape == (
        1,
        32,
        32,
        1,
    )
    with pytest.raises(DataError, match=r"front end vibration: .*\[B, 4096\]"):
        make_front_end("vibration", {})([np.zeros(100)])
    with pytest.raises(DataError, match=r"unknown front end 'spectro' \(expected none, mfcc, vibration"):
        make_front_end("spectro", {})


def test_user_front_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_fe.py").write_text(
        "import numpy as np\n"
        "def energy(signals, scale=1.0):\n"
        "    return np.array([[float(np.sum(np.square(s))) * scale] for s in signals])\n"
        "def wrong_batch(signals):\n"
        "    return np.zeros((1, 2))\n"
        "def ints(signals):\n"
        "    return np.zeros((len(signals), 2), dtype=np.int64)\n"
        "def nans(signals):\n"
        "    return np.full((len(signals), 2), np.nan)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_fe", raising=False)
    out = make_front_end("my_fe:energy", {"scale": 2.0})([np.ones(3), np.ones(5)])
    assert out.dtype == np.float32 and out[:, 0].tolist() == [6.0, 10.0]
    for fn, match in [
        ("wrong_batch", r"returned float64 \(1, 2\)"),
        ("ints", "returned int64"),
        ("nans", "returned NaN or Inf"),
    ]:
        with pytest.raises(DataError, match=f"front end 'my_fe:{fn}': {match}"):
            make_front_end(f"my_fe:{fn}", {})([np.ones(3), np.ones(3)])
    with pytest.raises(DataError, match="front end 'no_such_module:f': cannot import"):
        make_front_end("no_such_module:f", {})
    with pytest.raises(DataError, match="front end 'my_fe:missing': cannot import"):
        make_front_end("my_fe:missing", {})


# ---- drift knobs -------------------------------------------------------------------------------------------


def test_default_condition_is_identity() -> None:
    x = list(AUDIO)
    assert set(default_condition()) == set(GENERIC_KNOBS)
    assert apply_condition(x, default_condition(), np.random.default_rng(0)) is x
    assert apply_condition(AUDIO, {}, np.random.default_rng(0)) is AUDIO
    assert apply_condition(AUDIO, {"gain": 1, "snr_db": 200}, np.random.default_rng(0)) is AUDIO


def test_knobs_deterministic_per_seed() -> None:
    cond = {"snr_db": 10.0, "background": 0.5, "shift": 0.01, "gain": 2.0}
    bg = [RNG.standard_normal(40_000).astype(np.float32)]
    a = apply_condition(AUDIO, cond, np.random.default_rng(5), bg, 16_000)
    b = apply_condition(AUDIO, cond, np.random.default_rng(5), bg, 16_000)
    c = apply_condition(AUDIO, cond, np.random.default_rng(6), bg, 16_000)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == AUDIO.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert isinstance(apply_condition(list(AUDIO), cond, np.random.default_rng(5), bg, 16_000), list)


@pytest.mark.parametrize("snr", [-10.0, 0.0, 10.0, 30.0])
def test_snr_within_half_a_db(snr: float) -> None:
    x = [AUDIO[0], AUDIO[1], AUDIO[4], AUDIO[4][:100]]
    out = apply_condition(x, {"snr_db": snr}, np.random.default_rng(1))
    for s, o in zip(x, out, strict=True):
        noise = o.astype(np.float64) - s
        measured = 10 * np.log10(np.mean(np.square(s, dtype=np.float64)) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5
        if len(s) > 1000:  # white, zero mean
            assert abs(float(np.mean(noise))) < 0.05 * float(np.std(noise))


def test_gain_offset_shift_contrast_brightness() -> None:
    x = np.arange(10, dtype=np.float32)[None, :]
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(apply_condition(x, {"gain": 2.0, "offset": -1.0}, rng), 2 * x - 1)
    np.testing.assert_array_equal(apply_condition(x, {"shift": 3}, rng), np.roll(x, 3, axis=1))
    np.testing.assert_array_equal(
        apply_condition(x, {"shift": 0.002}, rng, sample_rate=1000), np.roll(x, 2, axis=1)
    )
    img = [np.array([[0.0, 2.0], [4.0, 6.0]], dtype=np.float32)]
    out = apply_condition(img, {"contrast": 0.5, "brightness": 1.0}, rng)
    np.testing.assert_allclose(out[0], [[2.5, 3.5], [4.5, 5.5]])  # mean 3 kept, spread halved, then +1


def test_background_level() -> None:
    bg = [RNG.standard_normal(5000).astype(np.float32)]  # shorter than a clip: looped
    x = [AUDIO[0], AUDIO[4]]
    out = apply_condition(x, {"background": 0.5}, np.random.default_rng(0), bg)
    for s, o in zip(x, out, strict=True):
        added = o.astype(np.float64) - s
        assert np.sqrt(np.mean(added**2)) / np.sqrt(np.mean(np.square(s, dtype=np.float64))) == pytest.approx(
            0.5, 1e-3
        )
    with pytest.raises(DataError, match="knob 'background' > 0 needs background clips"):
        apply_condition(x, {"background": 0.5}, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"needs 1-D signals, example 0 has shape \(2, 2\)"):
        apply_condition([np.ones((2, 2))], {"background": 0.5}, np.random.default_rng(0), bg)


@pytest.mark.parametrize(
    ("cond", "match"),
    [
        ({"volume": 1.0}, r"fleet.condition: unknown knob 'volume' \(expected gain, offset"),
        ({"gain": float("nan")}, r"fleet.condition: knob 'gain' must be a finite number"),
        ({"snr_db": float("inf")}, r"knob 'snr_db' must be a finite number"),
        ({"gain": 0.0}, r"knob 'gain' = 0.0 out of range"),
        ({"contrast": -1.0}, r"knob 'contrast' = -1.0 out of range"),
        ({"background": 11.0}, r"knob 'background' = 11.0 out of range \(.*0..10"),
        ({"snr_db": -50.0}, r"knob 'snr_db' = -50.0 out of range"),
        ({"offset": True}, r"knob 'offset' must be a finite number"),
    ],
)
def test_check_condition_refusals(cond: dict[str, float], match: str) -> None:
    with pytest.raises(DataError, match=match):
        check_condition(cond, "fleet.condition")
    check_condition({"gain": 1000, "snr_db": -40, "background": 10, "shift": -0.5}, "ok")
