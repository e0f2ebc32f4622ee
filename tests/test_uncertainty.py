"""Accuracy intervals over devices and shared test samples (fedtiny/uncertainty.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtiny.uncertainty import iid, paired_se, two_way, two_way_by_group, wilson


def _crossed(
    rng: np.random.Generator, devices: int = 200, pool: int = 40, per_device: int = 20
) -> tuple[np.ndarray, np.ndarray, float]:
    """A fleet whose devices test on draws from a small shared pool; sample difficulty and device skill vary.
    Returns (correct [K, n], sample ids [K, n], the population accuracy)."""
    sample_logit = rng.normal(1.0, 1.5, pool)
    device_logit = rng.normal(0.0, 0.7, devices)
    ids = rng.integers(0, pool, (devices, per_device))
    prob = 1 / (1 + np.exp(-(sample_logit[ids] + device_logit[:, None])))
    return rng.random(prob.shape) < prob, ids, 0.0


def _population(mc: int = 400_000) -> float:
    rng = np.random.default_rng(99)
    z = rng.normal(1.0, 1.5, mc) + rng.normal(0.0, 0.7, mc)
    return float(np.mean(1 / (1 + np.exp(-z))))


def test_intervals_cover_the_population_accuracy_when_devices_share_test_samples() -> None:
    truth = _population()
    rng = np.random.default_rng(1)
    hits, naive_hits = 0, 0
    reps = 300
    for _ in range(reps):
        y, ids, _ = _crossed(rng)
        e = two_way(y, ids)
        hits += e.lo <= truth <= e.hi
        lo, hi = wilson(e.p, y.size)  # observations treated as independent
        naive_hits += lo <= truth <= hi
        assert e.n_eff < y.size / 4  # 4,000 observations of 40 shared samples are worth far fewer
    assert 0.88 <= hits / reps <= 0.995
    assert naive_hits / reps < 0.6  # what an interval that ignores the sharing would claim


def test_intervals_are_deterministic_bounded_and_handle_padding_and_perfect_scores() -> None:
    rng = np.random.default_rng(2)
    y, ids, _ = _crossed(rng)
    assert two_way(y, ids) == two_way(y, ids)
    valid = np.ones(y.shape, dtype=bool)
    valid[:, -5:] = False
    e = two_way(np.where(valid, y, False), ids, valid)
    assert e.n == valid.sum() and abs(e.p - y[valid].mean()) < 1e-12
    perfect = two_way(np.ones((10, 6), bool), np.arange(60).reshape(10, 6))
    assert perfect.p == 1.0 and perfect.hi == 1.0 and 0.9 < perfect.lo < 1.0
    assert 0 <= iid(np.array([1, 0, 1, 1])).lo < 0.75 < iid(np.array([1, 0, 1, 1])).hi <= 1


def test_paired_difference_is_tighter_than_two_independent_intervals() -> None:
    rng = np.random.default_rng(3)
    y, ids, _ = _crossed(rng)
    flip = rng.random(y.shape) < 0.03  # method b differs from a on 3% of observations
    yb = y ^ flip
    se = paired_se(y, yb, ids)
    assert 0 < se < 0.5 * np.hypot(two_way(y, ids).se, two_way(yb, ids).se)


def test_compiled_moments_equal_the_numpy_reference(monkeypatch) -> None:
    """The compiled exact integer pass gives the numpy expressions' estimates up to float64 rounding, with and
    without a padding mask, for booleans and differences, int32 and int64 sample indices."""
    import fedtiny.uncertainty as unc

    rng = np.random.default_rng(7)
    cases = []
    for k, m in ((1, 1), (3, 5), (200, 20), (1000, 7)):
        y = rng.random((k, m)) < rng.random()
        ids = rng.integers(0, 50, (k, m)).astype(rng.choice([np.int32, np.int64]))
        valid = rng.random((k, m)) < 0.8
        cases.append((y, ids, valid))
    cases.append(
        (np.zeros((4, 3), bool), np.zeros((4, 3), np.int64), np.zeros((4, 3), bool))
    )  # nothing valid
    fast = [
        (two_way(y, i), two_way(y, i, v), paired_se(y, ~y, i, v), paired_se(y, y[::-1], i))
        for y, i, v in cases
    ]
    monkeypatch.setattr(unc, "_moments", None)
    monkeypatch.setattr(unc, "_counts", None)
    ref = [
        (two_way(y, i), two_way(y, i, v), paired_se(y, ~y, i, v), paired_se(y, y[::-1], i))
        for y, i, v in cases
    ]
    for got, want in zip(fast, ref, strict=True):
        for a, b in zip(got[:2], want[:2], strict=True):
            assert a.n == b.n
            for f in ("p", "lo", "hi", "se", "n_eff"):
                x, z = getattr(a, f), getattr(b, f)
                assert (np.isnan(x) and np.isnan(z)) or abs(x - z) <= 1e-12 * max(1.0, abs(z)), (f, x, z)
        for x, z in zip(got[2:], want[2:], strict=True):
            assert (np.isnan(x) and np.isnan(z)) or abs(x - z) <= 1e-12 * max(1.0, abs(z))


def test_negative_sample_indices_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="non-negative"):
        two_way(np.ones((2, 2), bool), np.array([[0, -1], [1, 2]]))


@pytest.mark.parametrize("seed", range(3))
def test_by_group_is_two_way_on_each_groups_rows_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, m = 300, 7
    y = rng.random((k, m)) < 0.7 if seed != 1 else rng.integers(-1, 2, (k, m)).astype(np.int8)
    samples = rng.integers(0, 50, (k, m))
    group = rng.integers(0, 4, k)
    group[group == 2] = 3  # group 2 has no device: left out
    group[:5] = 9  # outside range(4): counted in "all" only
    valid = None if seed == 0 else rng.random((k, m)) < 0.8
    every, per = two_way_by_group(y, samples, group, 4, valid)
    assert every == two_way(y, samples, valid)
    assert sorted(per) == [0, 1, 3]
    for g, est in per.items():
        sel = group == g
        assert est == two_way(y[sel], samples[sel], None if valid is None else valid[sel]), g


def test_by_group_handles_no_valid_observation_and_refuses_negative_samples() -> None:
    y = np.ones((4, 3), dtype=bool)
    every, per = two_way_by_group(
        y, np.zeros((4, 3), np.int64), np.array([0, 0, 1, 1]), 2, np.zeros((4, 3), bool)
    )
    assert every.n == 0 and math.isnan(every.p) and per[0].n == 0 and per[1].n == 0
    with pytest.raises(ValueError, match="non-negative"):
        two_way_by_group(y, -np.ones((4, 3), np.int64), np.zeros(4, np.int64), 1)


@pytest.mark.parametrize("groups", [1, 3])
def test_by_group_from_pool_outcomes_equals_the_gathered_observations(groups: int) -> None:
    rng = np.random.default_rng(groups)
    pool = rng.random(60) < 0.6  # one outcome per shared sample
    samples = rng.integers(0, 60, (500, 9)).astype(np.int32)
    group = rng.integers(0, groups, 500)
    valid = rng.random((500, 9)) < 0.9
    got = two_way_by_group(None, samples, group, groups, valid, pool_correct=pool)
    want = two_way_by_group(pool[samples], samples, group, groups, valid)
    assert got == want and sorted(got[1]) == list(range(groups))
    assert got[0] == two_way(pool[samples], samples, valid)
    with pytest.raises(ValueError, match="below 60"):
        two_way_by_group(None, samples + 1, group, groups, pool_correct=pool)
