"""The fused train-and-sum kernel (fedtiny.ondevice.fast.train_pooled_sums): each trained head checked, clipped
and added inside the kernel gives the partial sums of training every head and reducing them
(fedtiny/server/partial.py, reduce_updates): the same verdicts, accepted ids and losses, sums equal up to
float64 summation order."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.errors import ModelError
from fedtiny.ondevice import FloatHead, TrainConfig, TrainJob
from fedtiny.ondevice.fast import train_pooled, train_pooled_sums
from fedtiny.server.partial import (
    ACCEPTED_IDS,
    REJECTED,
    SUM_B,
    SUM_LOSS,
    SUM_N,
    SUM_NLOSS,
    SUM_W,
    empty_sums,
    reduce_updates,
    sums_from_verdicts,
)


def _case(seed: int, k: int, lr: float, momentum: float = 0.0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    c, d, n, m = 5, 12, 20, 400
    pool = rng.integers(-128, 128, (m, d)).astype(np.int8)
    labels = rng.integers(0, c, m).astype(np.int16)
    idx = rng.integers(0, m, (k, n)).astype(np.int32)
    counts = rng.integers(0, n + 3, k)  # some empty, some over the cache size
    g = FloatHead(
        (0.1 * rng.standard_normal((c, d))).astype(np.float32),
        (0.1 * rng.standard_normal(c)).astype(np.float32),
    )
    cfg = TrainConfig(2, 4, lr, momentum, 0.01, 0.1)
    kw = {
        "input_scale": 0.02,
        "input_zero_point": 3,
        "seed": seed,
        "round_": 2,
        "device_ids": np.arange(k) * 7,
    }
    return pool, labels, idx, counts, g, cfg, kw


def _both(seed: int, k: int, lr: float, max_norm: float, clip: float, momentum: float = 0.0):  # type: ignore[no-untyped-def]
    pool, labels, idx, counts, g, cfg, kw = _case(seed, k, lr, momentum)
    res = train_pooled(g.weights, g.bias, pool, labels, idx, counts, TrainJob(cfg, **kw))
    ref = reduce_updates(res.weights, res.bias, counts, res.loss, kw["device_ids"], g, max_norm, clip)
    fused = train_pooled_sums(g.weights, g.bias, pool, labels, idx, counts, TrainJob(cfg, **kw), example_weights=counts.astype(np.float64), max_norm=max_norm, clip_norm=clip)  # fmt: skip
    got = sums_from_verdicts(fused.sum_w, fused.sum_b, counts, fused.loss, kw["device_ids"], fused.verdict)
    assert np.array_equal(fused.loss, res.loss, equal_nan=True)
    return ref, got, res


def _same(ref: dict, got: dict) -> None:
    assert sorted(ref) == sorted(got)
    assert np.array_equal(ref[ACCEPTED_IDS], got[ACCEPTED_IDS])
    for key in (SUM_N, SUM_LOSS, SUM_NLOSS):
        assert np.array_equal(ref[key], got[key], equal_nan=True), key
    for key in ref:
        if key.startswith(REJECTED):
            assert int(ref[key][0]) == int(got[key][0]), key
    for key in (SUM_W, SUM_B):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, atol=1e-12 * np.abs(ref[key]).max())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 31, 32, 33, 97])
def test_fused_sums_equal_train_then_reduce_with_rejections_and_clipping(seed: int, k: int) -> None:
    pool, labels, idx, counts, g, cfg, kw = _case(seed, k, 0.3)
    res = train_pooled(g.weights, g.bias, pool, labels, idx, counts, TrainJob(cfg, **kw))
    norms = np.sqrt(
        ((res.weights - g.weights) ** 2).sum(axis=(1, 2)) + ((res.bias - g.bias) ** 2).sum(axis=1)
    )
    max_norm = float(np.quantile(norms, 0.7))  # about a third rejected for their norm
    clip = float(np.quantile(norms, 0.3))  # and most of the rest clipped
    ref, got, _ = _both(seed, k, 0.3, max_norm, clip, momentum=0.5 if seed % 2 else 0.0)
    _same(ref, got)
    if k > 30:
        assert int(ref[REJECTED + "norm_too_large"][0]) > 0 and len(ref[ACCEPTED_IDS]) > 0


def test_fused_sums_reject_non_finite_heads() -> None:
    ref, got, res = _both(5, 40, 1e38, 1e300, 0.0)  # a huge step overflows to inf and NaN
    assert not np.isfinite(res.weights).all()
    assert int(ref[REJECTED + "non_finite"][0]) > 0
    _same(ref, got)


def test_fused_sums_of_no_devices_are_the_empty_sums() -> None:
    pool, labels, _, _, g, cfg, kw = _case(0, 1, 0.1)
    kw["device_ids"] = np.zeros(0, np.int64)
    fused = train_pooled_sums(g.weights, g.bias, pool, labels, np.zeros((0, 20), np.int32), np.zeros(0, np.int64), TrainJob(cfg, **kw), example_weights=np.zeros(0), max_norm=1.0, clip_norm=0.0)  # fmt: skip
    got = sums_from_verdicts(
        fused.sum_w, fused.sum_b, np.zeros(0), fused.loss, kw["device_ids"], fused.verdict
    )
    _same(empty_sums(g), got)


def test_fused_sums_refuse_bad_rows() -> None:
    pool, labels, idx, counts, g, cfg, kw = _case(1, 8, 0.1)
    idx[3, 0] = len(pool)  # past the pool
    counts[:] = 5
    with pytest.raises(ModelError, match="pool rows within"):
        train_pooled_sums(g.weights, g.bias, pool, labels, idx, counts, TrainJob(cfg, **kw), example_weights=counts.astype(np.float64), max_norm=1.0, clip_norm=0.0)  # fmt: skip


@pytest.mark.parametrize("seed", range(2))
def test_fused_sums_with_per_slot_labels_and_weights(seed: int) -> None:
    """Per-slot labels (noisy or pseudo, differing per device) and gradient weights: the fused kernel trains the
    heads train_pooled trains with them, and sums them as reduce_updates does."""
    pool, _, idx, counts, g, cfg, kw = _case(seed, 45, 0.3)
    rng = np.random.default_rng(seed)
    labels = np.full(len(pool), -1, np.int16)  # the pool's labels are never read
    slot_labels = rng.integers(0, g.weights.shape[0], idx.shape)
    job = TrainJob(cfg, **kw, sample_weights=rng.choice(np.float32([1.0, 0.5, 0.3]), idx.shape))
    res = train_pooled(g.weights, g.bias, pool, labels, idx, counts, job, slot_labels=slot_labels)
    plain = train_pooled(g.weights, g.bias, pool, labels, idx, counts, TrainJob(cfg, **kw), slot_labels=slot_labels)  # fmt: skip
    assert not np.array_equal(res.weights, plain.weights)
    norms = np.sqrt(
        ((res.weights - g.weights) ** 2).sum(axis=(1, 2)) + ((res.bias - g.bias) ** 2).sum(axis=1)
    )
    max_norm, clip = float(np.quantile(norms, 0.8)), float(np.quantile(norms, 0.4))
    ref = reduce_updates(res.weights, res.bias, counts, res.loss, kw["device_ids"], g, max_norm, clip)
    fused = train_pooled_sums(g.weights, g.bias, pool, labels, idx, counts, job, example_weights=counts.astype(np.float64), max_norm=max_norm, clip_norm=clip, slot_labels=slot_labels)  # fmt: skip
    assert np.array_equal(fused.loss, res.loss, equal_nan=True)
    _same(
        ref, sums_from_verdicts(fused.sum_w, fused.sum_b, counts, fused.loss, kw["device_ids"], fused.verdict)
    )
