"""The compiled head trainer (fedtiny.ondevice.fast) against the numpy spec (fedtiny.ondevice.train).

The fast kernel computes the spec's float32 arithmetic in the spec's order (docs/ondevice.md §3, §3a): the same
bits, whatever the thread count or the CPU target numba compiles for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedtiny.errors import ModelError
from fedtiny.ondevice import TrainConfig, TrainJob, train_heads
from fedtiny.ondevice.fast import HAVE_NUMBA, train_heads_fast, train_pooled


def random_case(seed: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Random heads (shared or per device), caches, counts (0, partial, full) and hyper-parameters."""
    rng = np.random.default_rng(seed)
    k, n, d, c = (
        int(rng.integers(1, 40)),
        int(rng.integers(1, 90)),
        int(rng.integers(1, 80)),
        int(rng.integers(2, 13)),
    )
    shape = (c, d) if rng.random() < 0.5 else (k, c, d)
    w = rng.normal(0, 0.1, shape).astype(np.float32)
    b = rng.normal(0, 0.1, shape[:-1]).astype(np.float32)
    feats = rng.integers(-128, 128, (k, n, d)).astype(np.int8)
    labels = rng.integers(0, c, (k, n))
    counts = rng.integers(0, n + 1, k)
    counts[-1] = n + 5  # more than the padded width: clipped, as the spec does
    counts[0] = 0
    cfg = TrainConfig(
        epochs=int(rng.integers(1, 4)),
        batch_size=int(rng.integers(1, 20)),
        lr=float(rng.choice([0.01, 0.05, 0.1])),
        momentum=float(rng.choice([0.0, 0.5, 0.9])),
        weight_decay=float(rng.choice([0.0, 1e-3, 1e-2])),
        prox_mu=float(rng.choice([0.0, 0.01, 0.1])),
    )
    kw = {
        "input_scale": float(rng.uniform(0.002, 0.016)),  # |x| up to about 2, as backbone features
        "input_zero_point": int(rng.integers(-20, 20)),
        "seed": int(rng.integers(0, 2**32)),
        "round_": int(rng.integers(0, 1000)),
        "device_ids": rng.integers(0, 2**31, k),
    }
    return (w, b, feats, labels, counts, cfg), kw


def test_numba_is_installed() -> None:
    assert HAVE_NUMBA, "numba is a dependency (pyproject.toml): without it the fast path is the slow spec"


def same_bits(a: Any, b: Any) -> None:
    for name in ("weights", "bias", "loss", "steps"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name}: max difference {np.abs(x - y).max()}"


@pytest.mark.parametrize("seed", range(40))
def test_fast_kernel_equals_the_spec_bit_for_bit(seed: int) -> None:
    args, kw = random_case(seed)
    job = TrainJob(args[5], **kw)
    fast, ref = train_heads_fast(*args[:5], job), train_heads(*args[:5], job)
    same_bits(fast, ref)
    w0 = np.broadcast_to(args[0], ref.weights.shape)
    np.testing.assert_array_equal(fast.weights[0], w0[0])  # count 0: untouched, no step, loss 0
    assert fast.steps[0] == 0 and fast.loss[0] == 0.0


def test_fast_kernel_equals_the_spec_where_logits_saturate_and_heads_are_not_finite() -> None:
    """Huge logits (exp clamps at -87, probabilities underflow to subnormals) and NaN / inf in the start heads:
    the same bits, NaN included, as the spec."""
    args, kw = random_case(3)
    w, b, feats, labels, counts, cfg = args
    w = np.array(np.broadcast_to(w, (len(counts), *w.shape[-2:])), dtype=np.float32) * np.float32(400.0)
    b = np.array(np.broadcast_to(b, w.shape[:2]), dtype=np.float32)
    w[1, 0, 0] = np.nan
    if len(counts) > 2:
        b[2, -1] = np.inf
    fast, ref = (
        train_heads_fast(w, b, feats, labels, counts, TrainJob(cfg, **kw)),
        train_heads(w, b, feats, labels, counts, TrainJob(cfg, **kw)),
    )
    same_bits(fast, ref)
    assert np.isnan(fast.weights[1]).any()


def test_fast_kernel_is_deterministic_whatever_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    args, kw = random_case(7)
    (w, b, feats, labels, counts, cfg) = args
    reps = 50  # enough devices for several parallel blocks
    big = (
        np.tile(w, (reps, 1, 1)) if w.ndim == 3 else w,
        np.tile(b, (reps, 1)) if b.ndim == 2 else b,
        np.tile(feats, (reps, 1, 1)),
        np.tile(labels, (reps, 1)),
        np.tile(counts, reps),
        cfg,
    )
    bkw = dict(kw, device_ids=np.tile(kw["device_ids"], reps))
    runs = []
    for threads in ("1", "2", "4"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        runs.append(train_heads_fast(*big[:5], TrainJob(cfg, **bkw)))
        runs.append(train_heads_fast(*big[:5], TrainJob(cfg, **bkw)))
    for r in runs[1:]:
        for name in ("weights", "bias", "loss", "steps"):
            assert getattr(r, name).tobytes() == getattr(runs[0], name).tobytes()
    # a device trained alone gets the same bits as inside the batch
    k = len(counts)
    alone = train_heads_fast(
        w[-1:] if w.ndim == 3 else w,
        b[-1:] if b.ndim == 2 else b,
        feats[-1:],
        labels[-1:],
        counts[-1:],
        TrainJob(cfg, **dict(kw, device_ids=kw["device_ids"][-1:])),
    )
    assert alone.weights[0].tobytes() == runs[0].weights[k - 1].tobytes()


def test_fast_kernel_refuses_bad_labels_instead_of_reading_out_of_bounds() -> None:
    args, kw = random_case(3)
    w, b, feats, labels, counts, cfg = args
    bad = labels.copy()
    bad[-1, 0] = 99
    with pytest.raises(ModelError):
        train_heads_fast(w, b, feats, bad, counts, TrainJob(cfg, **kw))


@pytest.mark.parametrize("seed", range(8))
def test_pooled_kernel_gathers_exactly_what_the_gathered_call_trains(seed: int) -> None:
    """train_pooled on (pool, rows) = train_heads_fast on pool[rows] bit for bit, and the spec within TOL."""
    args, kw = random_case(100 + seed)
    w, b, feats, labels, counts, cfg = args
    if w.ndim == 3:
        w, b = w[0], b[0]
    rng = np.random.default_rng(seed)
    k, n, d = feats.shape
    pool = rng.integers(-128, 128, (97, d)).astype(np.int8)
    pool_labels = rng.integers(0, w.shape[0], 97).astype(np.int16)
    pool_labels[-1] = -1  # a row that is never a class: fine as long as no visited slot uses it
    rows = rng.integers(0, 96, (k, n)).astype(np.int32)
    pooled = train_pooled(w, b, pool, pool_labels, rows, counts, TrainJob(cfg, **kw))
    fast = train_heads_fast(w, b, pool[rows], pool_labels[rows], counts, TrainJob(cfg, **kw))
    same_bits(pooled, fast)
    same_bits(
        pooled, train_heads(w, b, pool[rows], pool_labels[rows].astype(np.int64), counts, TrainJob(cfg, **kw))
    )
    bad = rows.copy()
    bad[-1, 0] = 96  # the label -1 row in a visited slot (the last device's count covers slot 0)
    with pytest.raises(ModelError):
        train_pooled(w, b, pool, pool_labels, bad, counts, TrainJob(cfg, **kw))
    bad[-1, 0] = 97  # past the pool's end
    with pytest.raises(ModelError):
        train_pooled(w, b, pool, pool_labels, bad, counts, TrainJob(cfg, **kw))


def random_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Per-slot gradient weights: 1 (a given label) or a pseudo-label weight (docs/ondevice.md §5a)."""
    return rng.choice(np.float32([1.0, 1.0, 0.5, 0.25, 0.3]), shape).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_fast_kernel_equals_the_spec_with_sample_weights(seed: int) -> None:
    """Per-slot gradient weights (docs/ondevice.md §3: ``g_j = g_j * w_j`` after the division by m): the kernel
    gives the spec's bits; weights that are all 1 give the bits of no weights at all."""
    args, kw = random_case(200 + seed)
    rng = np.random.default_rng(seed)
    k, n = args[3].shape
    sw = random_weights(rng, (k, n))
    sw[:, n // 2 :] = np.where(
        rng.random((k, n - n // 2)) < 0.1, np.nan, sw[:, n // 2 :]
    )  # unvisited: ignored
    live = np.arange(n)[None, :] < np.minimum(args[4], n)[:, None]
    sw[live & np.isnan(sw)] = 0.5
    job = TrainJob(args[5], **kw, sample_weights=sw)
    fast, ref = train_heads_fast(*args[:5], job), train_heads(*args[:5], job)
    same_bits(fast, ref)
    plain = TrainJob(args[5], **kw)
    ones = TrainJob(args[5], **kw, sample_weights=np.ones((k, n), np.float32))
    same_bits(train_heads_fast(*args[:5], ones), train_heads_fast(*args[:5], plain))
    if seed < 3:  # the numpy spec is the slow one
        same_bits(train_heads(*args[:5], ones), train_heads(*args[:5], plain))
    if (sw[live] != 1).any() and (np.minimum(args[4], n) > 0).any():
        unweighted = train_heads_fast(*args[:5], plain)
        assert not np.array_equal(fast.weights, unweighted.weights)
        assert np.array_equal(fast.steps, unweighted.steps)
    with pytest.raises(ModelError, match="sample_weights"):
        train_heads_fast(*args[:5], TrainJob(args[5], **kw, sample_weights=sw[:, :-1]))


@pytest.mark.parametrize("seed", range(6))
def test_pooled_kernel_with_per_slot_labels_and_weights(seed: int) -> None:
    """``slot_labels`` (each device's own labels of its slots, e.g. noisy or pseudo) instead of the pool's, and
    per-slot weights: train_pooled = train_heads_fast on the gathered arrays = the spec, bit for bit."""
    args, kw = random_case(300 + seed)
    w, b, feats, labels, counts, cfg = args
    if w.ndim == 3:
        w, b = w[0], b[0]
    rng = np.random.default_rng(seed)
    k, n, d = feats.shape
    pool = rng.integers(-128, 128, (97, d)).astype(np.int8)
    pool_labels = np.full(97, -1, np.int16)  # never read: every slot has its own label
    rows = rng.integers(0, 97, (k, n)).astype(np.int32)
    slot_labels = rng.integers(0, w.shape[0], (k, n)).astype(np.int16)
    job = TrainJob(cfg, **kw, sample_weights=random_weights(rng, (k, n)))
    pooled = train_pooled(w, b, pool, pool_labels, rows, counts, job, slot_labels=slot_labels)
    same_bits(pooled, train_heads_fast(w, b, pool[rows], slot_labels, counts, job))
    same_bits(pooled, train_heads(w, b, pool[rows], slot_labels.astype(np.int64), counts, job))
    one_step = TrainJob(TrainConfig(epochs=1, batch_size=n), **kw, sample_weights=job.sample_weights)
    loss = train_pooled(w, b, pool, pool_labels, rows, counts, one_step, slot_labels=slot_labels).loss
    one_step = TrainJob(
        TrainConfig(epochs=1, batch_size=n), **kw
    )  # the loss comes before the step: unweighted
    assert (
        loss.tobytes()
        == train_pooled(
            w, b, pool, pool_labels, rows, counts, one_step, slot_labels=slot_labels
        ).loss.tobytes()
    )
    bad = slot_labels.copy()
    bad[-1, 0] = -1  # an unlabelled slot that is visited (the last device's count covers slot 0)
    with pytest.raises(ModelError, match="labels"):
        train_pooled(w, b, pool, pool_labels, rows, counts, job, slot_labels=bad)
    with pytest.raises(ModelError, match="slot_labels"):
        train_pooled(w, b, pool, pool_labels, rows, counts, job, slot_labels=slot_labels[:, :-1])


def test_exp_and_log_are_close_to_the_true_functions_and_keep_nan() -> None:
    from fedtiny.ondevice.fmath import exp_f32, log_f32

    x = np.concatenate([np.linspace(-87, 0, 200_001, dtype=np.float32), np.float32([-0.0, -1e-30, -1e-7])])
    want = np.exp(x.astype(np.float64))
    assert (np.abs(exp_f32(x) - want) <= 2e-7 * want).all()  # measured 8.1e-8 (a rounded float32 exp: 6e-8)
    low = exp_f32(np.float32([-87.5, -100, -1e30, -np.inf, np.nan]))  # below -87: e^-87, a normal float
    assert (low[:4] > 1.1e-38).all() and (low[:4] <= 1.7e-38).all() and np.isnan(low[4])
    assert exp_f32(np.float32([0.0]))[0] == 1.0
    s = np.concatenate(
        [np.linspace(1, 2, 100_001, dtype=np.float32), np.geomspace(1, 1e6, 100_001, dtype=np.float32)]
    )
    got, ref = log_f32(s), np.log(s.astype(np.float64))
    assert (np.abs(got - ref) <= 3e-7 * np.maximum(ref, 1.0)).all()  # measured 2.6e-7 absolute on [1, 1000]
    assert log_f32(np.float32([1.0]))[0] == 0.0
    special = log_f32(np.float32([np.inf, np.nan, 0.0, -1.0, 1e-40]))
    assert special[0] == np.inf and np.isnan(special[1:]).all()


def test_compiled_exp_and_log_equal_the_numpy_spec() -> None:
    from fedtiny.ondevice import fast
    from fedtiny.ondevice.fmath import exp_f32, log_f32

    rng = np.random.default_rng(5)
    v = np.concatenate([-rng.exponential(5.0, 20_000), [0.0, -87.0, -87.5, -np.inf, np.nan, -0.34657359]])
    v = v.astype(np.float32)
    s = np.concatenate([1.0 + rng.exponential(3.0, 20_000), [1.0, 0.70710677 * 2, np.inf, np.nan, 0.0]])
    s = s.astype(np.float32)
    e = np.array([fast._exp1(np.float32(t)) for t in v], dtype=np.float32)
    lg = np.array([fast._log1(np.float32(t)) for t in s], dtype=np.float32)
    assert e.tobytes() == exp_f32(v).tobytes()
    assert lg.tobytes() == log_f32(s).tobytes()


_OTHER_CPU = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.test_ondevice_fast import random_case
from fedtiny.ondevice import TrainJob, train_heads
from fedtiny.ondevice.fast import train_heads_fast
h = hashlib.sha256()
for seed in range(6):
    args, kw = random_case(seed)
    sw = None
    if seed % 2:  # per-slot gradient weights (pseudo-labels, docs/ondevice.md section 3)
        sw = np.random.default_rng(seed).choice(np.float32([1.0, 0.5, 0.3]), args[3].shape).astype(np.float32)
    job = TrainJob(args[5], **kw, sample_weights=sw)
    for r in (train_heads_fast(*args[:5], job), train_heads(*args[:5], job)):
        for a in (r.weights, r.bias, r.loss, r.steps):
            h.update(a.tobytes())
print(h.hexdigest())
"""


def test_same_bits_under_other_cpu_targets(tmp_path: Any) -> None:
    """Another machine played on this one: numba compiled for a generic x86-64 (no AVX, no FMA) in a fresh
    on-disk cache, numpy's AVX-512 and AVX2 dispatch switched off, one thread; the spec and the kernel give
    the bits they give here (an AVX2-class target and two threads: tests/test_same_bits.py's resume)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = _OTHER_CPU.format(root=root)
    from cpu_targets import other_cpu_envs

    digests = []
    for env in [{}, other_cpu_envs(tmp_path)[0]]:  # the AVX2-class target: tests/test_same_bits.py (resume)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append((env, out.stdout.strip().splitlines()[-1]))
    assert len({d for _, d in digests}) == 1, digests


@pytest.mark.parametrize("n", [0, 1, 2, 17, 64, 256, 257, 600])
def test_rank_order_is_the_spec_argsort(n: int) -> None:
    from fedtiny.ondevice.fast import _order
    from fedtiny.ondevice.shuffle import mix64

    for key in (np.uint64(0), np.uint64(12345), np.uint64(2**64 - 1)):
        order = np.full(max(n, 1), -7, dtype=np.int64)
        _order(key, n, order, np.empty(max(n, 1), dtype=np.uint64))
        slots = np.arange(1, n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            sk = mix64(key ^ (slots * np.uint64(0x9E3779B97F4A7C15)))
        np.testing.assert_array_equal(order[:n], np.argsort(sk, kind="stable"))
