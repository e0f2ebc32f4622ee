"""The on-device numeric spec against the real TFLite Micro and LiteRT interpreters."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import head_submodel, read_head, write_head
from fedtiny.model.runtime import Int8Runner
from fedtiny.ondevice import (
    FeatureCache,
    FloatHead,
    TrainConfig,
    TrainJob,
    dequantize_head,
    device_budget,
    head_forward_int8,
    quantize_head,
    quantize_multiplier,
    train_heads,
)
from fedtiny.ondevice.quant import multiply_by_quantized_multiplier


def _tflm_logits(model: bytes, feats: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime as tflm

    it = tflm.Interpreter.from_bytes(model, arena_size=32 * 1024)
    out = []
    for f in feats:
        it.set_input(f[None], 0)
        it.invoke()
        out.append(it.get_output(0).reshape(-1).copy())
    return np.stack(out)


def _litert_logits(model: bytes, feats: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)  # default kernels (XNNPACK where it applies)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for f in feats:
        it.set_tensor(i, f[None])
        it.invoke()
        out.append(it.get_tensor(o).reshape(-1).copy())
    return np.stack(out)


def _trained_head(model: bytes, seed: int = 1) -> tuple[object, np.ndarray]:
    head = read_head(model)
    rng = np.random.default_rng(seed)
    feats = rng.integers(-128, 128, (1, 80, head.num_features)).astype(np.int8)
    labels = rng.integers(0, head.num_classes, (1, 80))
    fh = dequantize_head(head)
    res = train_heads(
        fh.weights,
        fh.bias,
        feats,
        labels,
        np.array([80]),
        TrainJob(
            TrainConfig(epochs=3, lr=0.1),
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=seed,
            round_=1,
            device_ids=np.array([0]),
        ),
    )
    new = quantize_head(
        FloatHead(res.weights[0], res.bias[0]), head.input_scale, head.input_zero_point, feats[0]
    )
    return new, feats


def test_spec_equals_tflite_micro_bit_for_bit_on_1000_random_features(tiny_tflite: bytes) -> None:
    new_head, _ = _trained_head(tiny_tflite)
    patched = write_head(tiny_tflite, new_head)
    feats = np.random.default_rng(7).integers(-128, 128, (1000, new_head.num_features)).astype(np.int8)
    tflm = _tflm_logits(head_submodel(patched), feats)
    spec = head_forward_int8(new_head, feats)
    assert tflm.shape == spec.shape == (1000, new_head.num_classes)
    assert np.array_equal(tflm, spec)
    assert len(np.unique(spec)) > 20  # not a saturated, trivially-equal output


def test_litert_agrees_with_tflite_micro_within_one_lsb(tiny_tflite: bytes) -> None:
    new_head, _ = _trained_head(tiny_tflite, seed=2)
    sub = head_submodel(write_head(tiny_tflite, new_head))
    feats = np.random.default_rng(8).integers(-128, 128, (1000, new_head.num_features)).astype(np.int8)
    diff = np.abs(_litert_logits(sub, feats).astype(int) - _tflm_logits(sub, feats).astype(int))
    # Stated tolerance (docs/ondevice.md, field notes): at most 1 LSB, in at most 15% of outputs.
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 0.15


def test_patched_full_model_runs_in_both_runtimes(tiny_tflite: bytes) -> None:
    new_head, _ = _trained_head(tiny_tflite, seed=3)
    patched = write_head(tiny_tflite, new_head)
    assert len(patched) == len(tiny_tflite)
    assert read_head(patched).equals(new_head)
    x = np.random.default_rng(0).normal(size=(40, 16, 16, 1)).astype(np.float32)
    logits, feats = Int8Runner(patched, "tflm").run(x)
    assert np.array_equal(logits, head_forward_int8(new_head, feats))
    l2, f2 = Int8Runner(patched, "litert").run(x)
    assert np.abs(f2.astype(int) - feats.astype(int)).max() <= 1
    assert np.abs(l2.astype(int) - logits.astype(int)).max() <= 2


def test_stale_logit_quantization_would_be_wrong(tiny_tflite: bytes) -> None:
    """Why write_head updates the logit scale: keeping the old one changes the outputs."""
    new_head, feats = _trained_head(tiny_tflite, seed=4)
    old = read_head(tiny_tflite)
    stale = new_head.with_(output_scale=old.output_scale, output_zero_point=old.output_zero_point)
    assert not np.array_equal(head_forward_int8(stale, feats[0]), head_forward_int8(new_head, feats[0]))


def test_quantize_multiplier_matches_tflite_reference_values() -> None:
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(0.25) == (1 << 30, -1)
    q, s = quantize_multiplier(0.0123)
    assert abs(q * 2.0 ** (s - 31) - 0.0123) < 1e-9
    # rounding of the doubling high multiply and divide-by-power-of-two, both signs
    out = multiply_by_quantized_multiplier(np.array([1000, -1000, 7, -7]), np.array(1 << 30), np.array(-1))
    assert out.tolist() == [250, -250, 2, -2]


def test_vectorized_training_equals_one_device_at_a_time() -> None:
    rng = np.random.default_rng(0)
    k, n, d, c = 6, 40, 16, 4
    feats = rng.integers(-128, 128, (k, n, d)).astype(np.int8)
    labels = rng.integers(0, c, (k, n))
    counts = np.array([40, 3, 17, 40, 1, 25])
    w = rng.normal(0, 0.1, (c, d)).astype(np.float32)
    b = np.zeros(c, np.float32)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-3, prox_mu=0.01)
    kw = dict(input_scale=0.05, input_zero_point=3, seed=11, round_=4)
    ids = np.arange(100, 100 + k)
    many = train_heads(w, b, feats, labels, counts, TrainJob(cfg, device_ids=ids, **kw))
    for i in range(k):
        one = train_heads(
            w,
            b,
            feats[i : i + 1],
            labels[i : i + 1],
            counts[i : i + 1],
            TrainJob(cfg, device_ids=ids[i : i + 1], **kw),
        )
        np.testing.assert_allclose(many.weights[i], one.weights[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(many.loss[i], one.loss[0], rtol=1e-5)
        assert many.steps[i] == one.steps[0] == 2 * -(-counts[i] // 8)


def test_training_learns_and_shuffle_depends_on_seed() -> None:
    rng = np.random.default_rng(1)
    d, c, n = 8, 3, 90
    centers = rng.normal(0, 40, (c, d))
    y = rng.integers(0, c, n)
    feats = np.clip(centers[y] + rng.normal(0, 5, (n, d)), -128, 127).astype(np.int8)[None]
    w, b = np.zeros((c, d), np.float32), np.zeros(c, np.float32)
    kw = dict(input_scale=0.02, input_zero_point=0, round_=0, device_ids=np.array([5]))
    r1 = train_heads(w, b, feats, y[None], np.array([n]), TrainJob(TrainConfig(epochs=1), seed=1, **kw))
    r5 = train_heads(w, b, feats, y[None], np.array([n]), TrainJob(TrainConfig(epochs=5), seed=1, **kw))
    r1b = train_heads(w, b, feats, y[None], np.array([n]), TrainJob(TrainConfig(epochs=1), seed=2, **kw))
    assert r5.loss[0] < r1.loss[0] < np.log(c)
    acc = np.mean(np.argmax((feats[0] * 0.02) @ r5.weights[0].T + r5.bias[0], axis=1) == y)
    assert acc > 0.9
    assert not np.array_equal(r1.weights, r1b.weights)


def test_quantize_head_rejects_non_finite_and_is_stable() -> None:
    rng = np.random.default_rng(2)
    feats = rng.integers(-128, 128, (50, 8)).astype(np.int8)
    fh = FloatHead(rng.normal(0, 0.2, (3, 8)).astype(np.float32), rng.normal(0, 0.1, 3).astype(np.float32))
    h = quantize_head(fh, 0.05, -1, feats)
    assert h.weights.dtype == np.int8 and np.abs(h.weights).max() == 127
    h2 = quantize_head(dequantize_head(h), 0.05, -1, feats)
    assert np.array_equal(h2.weights, h.weights) and np.array_equal(h2.bias, h.bias)
    bad = FloatHead(fh.weights.copy(), fh.bias.copy())
    bad.weights[0, 0] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        quantize_head(bad, 0.05, -1, feats)


def test_feature_cache_is_a_ring_buffer() -> None:
    cache = FeatureCache(2, capacity=4, dim=2)
    f = np.arange(2 * 6 * 2, dtype=np.int8).reshape(2, 6, 2)
    cache.push(f, np.arange(12).reshape(2, 6), n_new=np.array([6, 2]))
    feats0, labels0 = cache.device(0)
    assert labels0.tolist() == [4, 5, 2, 3]  # the two oldest of six were overwritten
    assert cache.device(1)[1].tolist() == [6, 7]
    assert cache.count.tolist() == [4, 2]
    with pytest.raises(ModelError):
        cache.push(f.astype(np.int16), np.zeros((2, 6)))


def test_device_budget_counts_buffers() -> None:
    b = device_budget(10, 64, 200, 200, TrainConfig(batch_size=16))
    assert b.ram_bytes == 23664 and b.ram_bytes <= 32 * 1024
    b_mom = device_budget(10, 64, 200, 200, TrainConfig(batch_size=16, momentum=0.9))
    assert b_mom.ram_bytes - b.ram_bytes == 4 * 10 * 65
    assert b.infer_macs == 640


def test_fixed_point_training_tracks_float32_and_is_integer_deterministic() -> None:
    from fedtiny.ondevice import train_heads_fixed
    from fedtiny.ondevice.fixed import exp2_q16

    y = np.arange(-6 * 65536, 1, 997, dtype=np.int64)
    assert np.max(np.abs(exp2_q16(y) / 65536 - 2.0 ** (y / 65536))) < 1e-3
    rng = np.random.default_rng(1)
    d, c, n = 32, 4, 100
    centers = rng.normal(0, 30, (c, d))
    lab = rng.integers(0, c, (3, n))
    feats = np.clip(centers[lab] + rng.normal(0, 25, (3, n, d)), -128, 127).astype(np.int8)
    w, b = rng.normal(0, 0.05, (c, d)).astype(np.float32), np.zeros(c, np.float32)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    kw = dict(input_scale=0.04, input_zero_point=-5, seed=3, round_=1, device_ids=np.array([1, 2, 3]))
    counts = np.array([100, 60, 7])
    rf = train_heads(w, b, feats, lab, counts, TrainJob(cfg, **kw))
    rx = train_heads_fixed(w, b, feats, lab, counts, TrainJob(cfg, **kw))
    assert np.abs(rf.weights - rx.weights).max() < 2e-3
    np.testing.assert_allclose(rx.loss, rf.loss, rtol=2e-3)
    assert not np.array_equal(rx.weights, np.broadcast_to(w, rx.weights.shape))
    one = train_heads_fixed(
        w, b, feats[2:], lab[2:], counts[2:], TrainJob(cfg, **{**kw, "device_ids": np.array([3])})
    )
    assert np.array_equal(one.weights[0], rx.weights[2])  # integer arithmetic: bit-identical in a batch
    with pytest.raises(ModelError, match="plain SGD"):
        train_heads_fixed(w, b, feats, lab, counts, TrainJob(TrainConfig(momentum=0.9), **kw))


def test_fixed_point_training_weights_pseudo_labelled_gradients_in_q16() -> None:
    """docs/ondevice.md §3b: after ``g = trunc(g / m)``, ``g = (g * wq) >> 16`` with ``wq`` the Q16 weight of
    fedtiny.ondevice.pseudo.fixed_weight; a weight of 1 changes no bit, 0 freezes the head, and a weighted
    fixed-point head still tracks the weighted float32 one."""
    from fedtiny.ondevice import train_heads_fixed
    from fedtiny.ondevice.fixed import weights_q16
    from fedtiny.ondevice.pseudo import fixed_weight
    from fedtiny.ondevice.train import TrainResult

    rng = np.random.default_rng(4)
    d, c, n = 24, 4, 50
    centers = rng.normal(0, 30, (c, d))
    lab = rng.integers(0, c, (3, n))
    feats = np.clip(centers[lab] + rng.normal(0, 25, (3, n, d)), -128, 127).astype(np.int8)
    w, b = rng.normal(0, 0.05, (c, d)).astype(np.float32), np.zeros(c, np.float32)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    kw = dict(input_scale=0.04, input_zero_point=-5, seed=3, round_=1, device_ids=np.array([1, 2, 3]))
    counts = np.array([50, 30, 7])
    sw = rng.choice(np.float32([1.0, 0.5, 0.25, 0.3]), (3, n)).astype(np.float32)
    sw[2, 7:] = np.nan  # beyond the count: never visited, ignored
    q = weights_q16(sw, counts)
    assert q is not None and q[2, 7:].tolist() == [65536] * (n - 7)
    assert {fixed_weight(0.3), fixed_weight(0.5), fixed_weight(1.0)} == {19661, 32768, 65536}
    live = np.arange(n)[None, :] < counts[:, None]
    assert set(q[(sw == np.float32(0.3)) & live].tolist()) == {19661}

    def fixed(weights: np.ndarray | None, cfg: TrainConfig = cfg) -> TrainResult:
        return train_heads_fixed(w, b, feats, lab, counts, TrainJob(cfg, **kw, sample_weights=weights))

    plain, ones, got = fixed(None), fixed(np.ones((3, n), np.float32)), fixed(sw)
    for name in ("weights", "bias", "loss", "steps"):
        assert getattr(ones, name).tobytes() == getattr(plain, name).tobytes(), name
    assert not np.array_equal(got.weights, plain.weights)
    one_step = TrainConfig(epochs=1, batch_size=n, lr=0.05)  # the loss is taken before the step: not weighted
    assert fixed(sw, one_step).loss.tobytes() == fixed(None, one_step).loss.tobytes()
    rf = train_heads(w, b, feats, lab, counts, TrainJob(cfg, **kw, sample_weights=np.nan_to_num(sw, nan=1.0)))
    assert np.abs(rf.weights - got.weights).max() < 2e-3
    frozen = fixed(np.zeros((3, n), np.float32))  # wq = 0: every gradient 0, the head as it came in
    assert np.array_equal(
        frozen.weights, np.broadcast_to(from_fixed_roundtrip(w, 0.04), frozen.weights.shape)
    )
    assert np.array_equal(frozen.steps, plain.steps)
    one = train_heads_fixed(
        w,
        b,
        feats[2:],
        lab[2:],
        counts[2:],
        TrainJob(cfg, **{**kw, "device_ids": np.array([3])}, sample_weights=sw[2:]),
    )
    assert np.array_equal(one.weights[0], got.weights[2])
    bad = sw.copy()
    bad[0, 0] = np.nan  # a visited slot
    with pytest.raises(ModelError, match="sample_weights"):
        fixed(bad)


def from_fixed_roundtrip(w: np.ndarray, input_scale: float) -> np.ndarray:
    """A float head through the fixed-point trainer's conversions in and out (docs/ondevice.md §3b)."""
    from fedtiny.ondevice.fixed import from_fixed, to_fixed

    v, bq = to_fixed(w, np.zeros(w.shape[0], np.float32), input_scale)
    return from_fixed(v, bq, input_scale)[0]
