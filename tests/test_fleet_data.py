"""Fleet data at scale: shared pools, per-device indices, ring-buffer caches, drift, boards, gateway work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.simulated.gateway import train_devices
from fedtiny.errors import BudgetError
from fedtiny.fleet.boards import BOARDS, check_fits, get_board
from fedtiny.fleet.data import FleetData, build_plan
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.ondevice import FeatureCache, TrainConfig, TrainJob, device_budget
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, layout_of
from fedtiny.records import decode_int8_delta, encode_int8_delta


def tiny(**over: object) -> dict:
    d = {
        "name": "tiny",
        "seed": 3,
        "rounds": 6,
        "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {
            "devices": 24,
            "devices_per_gateway": 5,
            "samples_per_device": 10,
            "test_samples_per_device": 8,
            "cache_size": 16,
            "new_samples_per_round": 3,
            "pool_per_class": 12,
            "variants": 3,
            "spread": {"rotation_deg": 5.0},
        },
        "train": {"epochs": 1, "batch_size": 4},
        "drift": [{"at": 3, "fraction": 0.5, "group": "moved", "condition": {"brightness": 0.4}}],
        "runtime": {"engine": "inline"},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return d


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, object]:
    s = scenario_from_dict(tiny())
    out = tmp_path_factory.mktemp("fleet")
    layout, head = prepare_synthetic(fleet_spec(s), out)
    return s, out / "fleet", head


def test_cache_is_a_ring_buffer_of_the_device_stream(fleet) -> None:
    s, root, _ = fleet
    data = FleetData(root)
    devs = np.array([0, 7, 23])
    for r in [0, 1, 2, 5]:
        idx, count = data.cache_indices(devs, r)
        t = data.collected(r)
        # push the whole stream through the on-device FeatureCache, one round at a time
        cache = FeatureCache(len(devs), s.fleet.cache_size, 1)
        j = np.arange(t)
        r_j = np.where(j < data.n_initial, 0, 1 + (j - data.n_initial) // data.per_round)
        stream = data._draw(devs, j, data.segment_of_round(r_j), 1)
        cache.push(np.zeros((len(devs), t, 1), dtype=np.int8), (stream % 30000).astype(np.int16))
        assert count == min(t, s.fleet.cache_size) == int(cache.count[0])
        assert np.array_equal(cache.labels[:, :count], (idx % 30000).astype(np.int16))


def test_drift_reaches_only_hit_devices_and_enters_caches_gradually(fleet) -> None:
    s, root, _ = fleet
    data = FleetData(root)
    layout = layout_of(s)
    moved = np.flatnonzero(np.load(root / "group.npy") == layout.groups.index("moved"))
    still = np.flatnonzero(np.load(root / "group.npy") == 0)
    assert len(moved) == 12 and len(still) == 12
    v = np.load(root / "variant.npy")
    assert np.array_equal(v[0, still], v[1, still]) and (v[0, moved] != v[1, moved]).all()

    def new(r):
        return (
            (
                (data.cache_indices(moved, r)[0] // (data.num_classes * data.pool_size))[:, :, None]
                == v[1, moved][:, None, None]
            )
            .any(-1)
            .sum(1)
        )

    counts = [int(new(r).min()) for r in (2, 3, 4, 5)]
    assert counts == [0, 3, 6, 9]  # three drifted samples per round replace the oldest ones


def test_test_samples_never_are_training_samples(fleet) -> None:
    _, root, _ = fleet
    data = FleetData(root)
    devs = np.arange(24)
    tr = data.cache_indices(devs, 5)[0] % data.pool_size
    te = data.test_indices(devs, 1) % data.pool_size
    assert tr.max() < data.pool_train <= te.min()


def test_pools_are_reused_from_cache(tmp_path: Path) -> None:
    s = scenario_from_dict(tiny())
    logs: list[str] = []
    prepare_synthetic(fleet_spec(s), tmp_path / "a", log=logs.append)
    prepare_synthetic(fleet_spec(s), tmp_path / "b", log=logs.append)
    assert "0 pools computed" in logs[-1]
    assert np.array_equal(
        np.load(tmp_path / "a/fleet/pool_feats.npy"), np.load(tmp_path / "b/fleet/pool_feats.npy")
    )


def test_label_shift_and_new_class_change_class_mixes() -> None:
    s = scenario_from_dict(
        tiny(
            drift=[
                {"at": 2, "fraction": 0.5, "group": "newc", "kind": "new_class", "classes": [9]},
                {"at": 4, "target": "newc", "kind": "label_shift", "alpha": 0.1},
            ]
        )
    )
    plan = build_plan(fleet_spec(s), layout_of(s))
    hit = plan.group > 0
    p9 = np.diff(np.concatenate([np.zeros((*plan.cmix.shape[:2], 1)), plan.cmix], axis=2), axis=2)[..., 9]
    assert (p9[0, hit] < 1e-6).all() and (p9[1, hit] > 0.05).all() and (p9[0, ~hit] > 0).any()
    assert (plan.group == 1).sum() == hit.sum()  # the label shift hit exactly the new-class group
    assert not np.allclose(plan.cmix[2, hit], plan.cmix[1, hit])


def test_boards_refuse_what_they_cannot_hold_and_mix_by_fraction() -> None:
    assert {"nano33ble", "esp32s3", "stm32h7"} <= set(BOARDS)
    need = device_budget(10, 64, 3000, 3000, TrainConfig()).ram_bytes
    with pytest.raises(BudgetError, match=r"board 'nano33ble' .* needs \d+: use a smaller fleet.cache_size"):
        check_fits(get_board("nano33ble"), need, "a 10x64 head with a 3000-sample cache")
    check_fits(get_board("stm32h7"), need, "same")
    s = scenario_from_dict(
        tiny(fleet={"devices": 1000, "boards": {"nano33ble": 0.5, "esp32s3": 0.3, "stm32h7": 0.2}})
    )
    plan = build_plan(fleet_spec(s), layout_of(s))
    assert np.bincount(plan.board).tolist() == [500, 300, 200]
    nano, s3 = get_board("nano33ble"), get_board("esp32s3")
    assert nano.compute_seconds(1e6) > s3.compute_seconds(1e6) and nano.link_seconds(1000) > s3.link_seconds(
        1000
    )


def test_gateway_batch_equals_one_device_at_a_time(fleet) -> None:
    _, root, head = fleet
    data = FleetData(root)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, momentum=0.5)
    devs = np.array([1, 4, 9, 17])
    batch = train_devices(head, data, devs, cfg, seed=5, round_=3)
    for i, d in enumerate(devs):
        one = train_devices(head, data, np.array([d]), cfg, seed=5, round_=3)
        np.testing.assert_allclose(one["weights"][0], batch["weights"][i], rtol=1e-5, atol=1e-6)


def test_int8_uplink_round_trip_within_half_a_step() -> None:
    delta = np.random.default_rng(0).normal(size=(3, 5, 64)).astype(np.float32)
    q, sc = encode_int8_delta(delta)
    assert q.dtype == np.int8 and q.nbytes * 4 == delta.nbytes
    assert np.abs(decode_int8_delta(q, sc) - delta).max() <= sc.max() / 2 + 1e-7


def test_balanced_test_mix_covers_every_class_under_the_device_condition(tmp_path: Path) -> None:
    local = scenario_from_dict(tiny(fleet={"dirichlet_alpha": 0.05}))
    balanced = scenario_from_dict(tiny(fleet={"dirichlet_alpha": 0.05}, eval={"test_mix": "balanced"}))
    counts = {}
    for name, s in (("local", local), ("balanced", balanced)):
        prepare_synthetic(fleet_spec(s), tmp_path / name)
        data = FleetData(tmp_path / name / "fleet")
        _, labels = data.gather(data.test_indices(np.arange(24), 0))
        counts[name] = np.array([len(np.unique(row)) for row in labels])
    assert counts["local"].mean() < 4  # heavy label skew: a device sees few classes
    assert (counts["balanced"] == min(10, 8)).all()  # 8 test samples, one per class in turn


def test_int8_uplink_cannot_hide_a_non_finite_update() -> None:
    delta = np.zeros((3, 2, 4), np.float32)
    delta[0] = 0.5
    delta[1, 1, 2] = np.nan
    delta[2, 0, 0] = np.inf
    q, sc = encode_int8_delta(delta)
    back = decode_int8_delta(q, sc)
    assert np.isfinite(back[0]).all()
    assert not np.isfinite(back[1]).all() and not np.isfinite(back[2]).all()


def test_boards_without_fpu_train_in_fixed_point(tmp_path: Path) -> None:
    from fedtiny.ondevice import dequantize_head, train_heads, train_heads_fixed

    s = scenario_from_dict(tiny(fleet={"boards": {"rp2040": 0.5, "nano33ble": 0.5}}))
    _, head = prepare_synthetic(fleet_spec(s), tmp_path)
    data = FleetData(tmp_path / "fleet")
    devs = np.arange(24)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.05)
    out = train_devices(head, data, devs, cfg, seed=5, round_=2)
    feats, labels = data.train(devs, 2)
    fh = dequantize_head(head)
    kw = dict(
        input_scale=head.input_scale,
        input_zero_point=head.input_zero_point,
        seed=5,
        round_=2,
        device_ids=devs,
    )
    counts = np.full(24, feats.shape[1])
    flt = train_heads(fh.weights, fh.bias, feats, labels.astype(np.int64), counts, TrainJob(cfg, **kw))
    fix = train_heads_fixed(fh.weights, fh.bias, feats, labels.astype(np.int64), counts, TrainJob(cfg, **kw))
    no_fpu = np.asarray(data.board)[devs] == data.meta["boards"].index("rp2040")
    assert 0 < no_fpu.sum() < 24
    assert np.array_equal(out["weights"][no_fpu], fix.weights[no_fpu])  # integer path, bit for bit
    np.testing.assert_allclose(out["weights"][~no_fpu], flt.weights[~no_fpu], rtol=1e-5, atol=1e-6)
    # with momentum the integer trainer cannot run: every board takes the float32 path
    mom = train_devices(
        head, data, devs, TrainConfig(epochs=1, batch_size=4, lr=0.05, momentum=0.5), seed=5, round_=2
    )
    assert np.isfinite(mom["weights"]).all()


def test_no_fpu_board_costs_more_in_software_float_than_in_fixed_point() -> None:
    rp, nano = get_board("rp2040"), get_board("nano33ble")
    assert not rp.fpu and nano.fpu
    assert rp.compute_seconds(1e6) == rp.soft_float_factor / rp.fixed_point_factor * rp.compute_seconds(
        1e6, True
    )
    assert nano.compute_seconds(1e6, True) == nano.compute_seconds(1e6)  # an FPU board trains in float anyway
