"""Vibration task: physics of the generator, determinism, drift, model and int8 conversion."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.errors import TaskError
from fedtiny.tasks import get_task
from fedtiny.tasks.vibration import FS, WINDOW, fault_frequencies, front_end, raw_signal

TASK = get_task("vibration")


def envelope_spectrum(x: np.ndarray, lo_hz: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean envelope spectrum of high-passed windows [B, N] (classic bearing diagnosis)."""
    spec = np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)
    freqs = np.fft.rfftfreq(x.shape[1], 1 / FS)
    spec[:, freqs < lo_hz] = 0
    analytic = np.fft.ifft(np.concatenate([spec, np.zeros_like(spec[:, 1:-1])], axis=1) * 2, axis=1)
    env = np.abs(analytic)
    es = np.abs(np.fft.rfft(env - env.mean(axis=1, keepdims=True), n=4 * x.shape[1], axis=1)).mean(axis=0)
    return np.fft.rfftfreq(4 * x.shape[1], 1 / FS), es


def peak_hz(freqs: np.ndarray, es: np.ndarray, lo: float, hi: float) -> float:
    band = (freqs >= lo) & (freqs <= hi)
    return float(freqs[band][np.argmax(es[band])])


def test_fault_frequencies_cwru_6205() -> None:
    ff = fault_frequencies(29.95)
    # published CWRU 6205-2RS multiples of shaft speed: BPFO 3.5848, BPFI 5.4152, BSF 2.357 (cos 0)
    assert ff["bpfo"] == pytest.approx(3.5848 * 29.95, rel=1e-3)
    assert ff["bpfi"] == pytest.approx(5.4152 * 29.95, rel=1e-3)
    assert ff["bsf"] == pytest.approx(2.3572 * 29.95, rel=2e-3)


@pytest.mark.parametrize("label,key", [(2, "bpfo"), (1, "bpfi")])
@pytest.mark.parametrize("speed", [29.95, 24.0])
def test_envelope_peak_at_fault_rate(label: int, key: str, speed: float) -> None:
    cond = TASK.resolve_condition({"speed_hz": speed, "noise": 0.02})
    x = raw_signal(np.full(16, label), np.random.default_rng(1), cond)
    freqs, es = envelope_spectrum(x)
    expect = float(fault_frequencies(speed)[key])
    assert peak_hz(freqs, es, 50, 250) == pytest.approx(expect, rel=0.03)


def test_inner_race_has_shaft_sidebands() -> None:
    cond = TASK.resolve_condition({"noise": 0.02, "load": 1.0})
    x = raw_signal(np.full(16, 1), np.random.default_rng(2), cond)
    freqs, es = envelope_spectrum(x)
    bpfi, fr = float(fault_frequencies(29.95)["bpfi"]), 29.95
    side = peak_hz(freqs, es, bpfi + 0.5 * fr, bpfi + 1.5 * fr)
    assert side == pytest.approx(bpfi + fr, rel=0.03)
    # outer race is not modulated: no sideband stands out as much relative to its carrier
    xo = raw_signal(np.full(16, 2), np.random.default_rng(2), cond)
    fo, eo = envelope_spectrum(xo)
    bpfo = float(fault_frequencies(29.95)["bpfo"])
    ratio_o = eo[np.argmin(np.abs(fo - bpfo - fr))] / eo[np.argmin(np.abs(fo - bpfo))]
    ratio_i = es[np.argmin(np.abs(freqs - bpfi - fr))] / es[np.argmin(np.abs(freqs - bpfi))]
    assert ratio_i > 3 * ratio_o


def test_imbalance_has_strong_1x() -> None:
    cond = TASK.resolve_condition(None)
    rng = np.random.default_rng(3)
    amp = {}
    for label in (0, 4):
        x = raw_signal(np.full(64, label), rng, cond)
        spec = np.abs(np.fft.rfft(x * np.hanning(WINDOW), axis=1))
        amp[label] = np.median(spec[:, round(29.95 * WINDOW / FS)])
    assert amp[4] > 3 * amp[0]


def test_shapes_dtype_determinism() -> None:
    labels = np.arange(10) % 5
    a = TASK.generate(labels, np.random.default_rng(7))
    b = TASK.generate(labels, np.random.default_rng(7))
    c = TASK.generate(labels, np.random.default_rng(8))
    assert a.shape == (10, 32, 32, 1) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_raw_and_front_end() -> None:
    x1 = TASK.raw(np.array([0, 1]), np.random.default_rng(0))
    x = TASK.raw(np.array([0, 1]), np.random.default_rng(0), {"gain": 2.0, "offset": 0.1})
    assert x.shape == (2, WINDOW) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2 * x1 + 0.1, atol=1e-5)  # gain scales the vibration, then offset adds
    with pytest.raises(TaskError, match="4096"):
        front_end(np.zeros((1, 100)))
    with pytest.raises(TaskError, match="resonance_hz"):
        TASK.generate(np.array([0]), np.random.default_rng(0), {"resonance_hz": 7000.0})


@pytest.mark.parametrize(
    "cond", [{"speed_hz": 24.0}, {"gain": 0.5}, {"resonance_hz": 2200.0}, {"noise": 0.15}, {"offset": 0.5}]
)
def test_drift_changes_inputs(cond: dict[str, float]) -> None:
    labels = np.arange(200) % 5
    base = TASK.generate(labels, np.random.default_rng(5))
    drifted = TASK.generate(labels, np.random.default_rng(5), cond)
    # some class-mean input moves by more than the seed-to-seed spread of the class means
    other = TASK.generate(labels, np.random.default_rng(6))

    def means(x):
        return np.stack([x[labels == c].mean(axis=0) for c in range(5)])

    assert np.abs(means(drifted) - means(base)).max() > 1.5 * np.abs(means(other) - means(base)).max()


def test_generation_speed() -> None:
    import time

    t0 = time.perf_counter()
    TASK.generate(np.arange(2000) % 5, np.random.default_rng(0))
    assert time.perf_counter() - t0 < 5.0  # 10,000 take about 2-3 s on one core


def test_model_and_int8_conversion() -> None:
    tf = pytest.importorskip("tensorflow")
    model = TASK.build_model()
    assert model.input_shape == (1, 32, 32, 1)
    assert model.output_shape == (1, 5)
    head = model.get_layer("head")
    assert head.kernel.shape == (64, 5)
    assert model.get_layer("features").output.shape[-1] == 64
    assert TASK.build_model(head_inputs=32).get_layer("head").kernel.shape == (32, 5)
    rep = TASK.generate(np.arange(10) % 5, np.random.default_rng(0))

    def representative():  # type: ignore[no-untyped-def]
        for x in rep:
            yield [x[None]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    flat = conv.convert()
    assert len(flat) <= 100 * 1024
    tflm = pytest.importorskip("tflite_micro")
    interp = tflm.runtime.Interpreter.from_bytes(
        flat, arena_size=64 * 1024
    )  # fails if the arena is too small
    interp.set_input(np.zeros((1, 32, 32, 1), dtype=np.int8), 0)
    interp.invoke()
    assert interp.get_output(0).shape == (1, 5)
