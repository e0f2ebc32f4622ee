"""The round loop in-process (same gateway code, no Ray): rejection of bad updates, realism, resume."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.simulated.gateway import handle
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, round_spec
from fedtiny.server.aggregate import validate_updates
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


def scenario(**over: dict) -> object:
    d: dict = {
        "name": "srv",
        "seed": 5,
        "rounds": 5,
        "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {
            "devices": 30,
            "devices_per_gateway": 7,
            "samples_per_device": 12,
            "test_samples_per_device": 10,
            "cache_size": 16,
            "new_samples_per_round": 4,
            "pool_per_class": 16,
            "variants": 2,
            "spread": {"rotation_deg": 4.0},
        },
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.1},
        "strategy": {"fraction": 0.5},
        "drift": [{"at": 3, "fraction": 0.4, "group": "moved", "condition": {"brightness": 0.3}}],
        "eval": {"baseline_devices": 12},
        "runtime": {"engine": "inline"},
    }
    for k, v in over.items():
        d.setdefault(k, {}).update(v)
    return scenario_from_dict(d)


def run(s, out: Path, stop_after: int = 0, resume: bool = False) -> FleetServer:
    layout, head = prepare_synthetic(fleet_spec(s), out)
    srv = FleetServer(round_spec(s), layout, out / "fleet", head, out_dir=out, stop_after=stop_after)
    if resume:
        assert srv.load_checkpoint()
    srv.run(InlineTransport(handle))
    return srv


def _rows(srv: FleetServer) -> str:
    return json.dumps([{k: v for k, v in asdict(r).items() if k != "wall_s"} for r in srv.rows])  # NaN-safe


@pytest.mark.parametrize("uplink", ["float32", "int8"])
def test_all_faulty_devices_are_rejected_counted_and_do_not_move_the_model(
    tmp_path: Path, uplink: str
) -> None:
    s = scenario(fleet={"faulty_fraction": 1.0, "fault": "nan"}, strategy={"uplink": uplink})
    srv = run(s, tmp_path)
    assert srv.rejected_total == sum(r.devices_sampled for r in srv.rows[1:]) == 5 * 15
    assert srv.rejected_reasons["non_finite"] == 75
    assert np.array_equal(srv.head.weights, srv.initial_head.weights) and np.array_equal(
        srv.head.bias, srv.initial_head.bias
    )
    assert all(r.devices_trained == 0 for r in srv.rows[1:])


@pytest.mark.parametrize("fault", ["inf", "scale"])
def test_rejected_updates_leave_the_same_model_as_any_other_rejected_fault(
    tmp_path: Path, fault: str
) -> None:
    ref = run(scenario(fleet={"faulty_fraction": 0.3, "fault": "nan"}), tmp_path / "nan")
    other = run(scenario(fleet={"faulty_fraction": 0.3, "fault": fault}), tmp_path / fault)
    assert other.rejected_total == ref.rejected_total > 0
    assert np.array_equal(other.head.weights, ref.head.weights)
    assert not np.array_equal(ref.head.weights, ref.initial_head.weights)  # honest devices still moved it


def test_robust_aggregation_resists_sign_flipping_poison(tmp_path: Path) -> None:
    clean = run(scenario(), tmp_path / "clean")
    mean = run(scenario(fleet={"faulty_fraction": 0.2, "fault": "sign_flip"}), tmp_path / "mean")
    med = run(
        scenario(fleet={"faulty_fraction": 0.2, "fault": "sign_flip"}, strategy={"name": "median"}),
        tmp_path / "med",
    )
    d = lambda a: float(np.abs(a.head.weights.astype(int) - clean.head.weights.astype(int)).mean())  # noqa: E731
    assert d(med) < d(mean)


def test_validation_rejects_wrong_shape_nan_and_absurd_norm() -> None:
    gw, gb = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    w = np.zeros((4, 3, 4), np.float32)
    w[1, 0, 0] = np.nan
    w[2] += 1e4
    val = validate_updates(w, np.zeros((4, 3), np.float32), gw, gb, 100.0)
    assert val.accepted.tolist() == [True, False, False, True]
    assert val.reasons == {"non_finite": 1, "norm_too_large": 1}
    assert validate_updates(np.zeros((2, 4, 3), np.float32), np.zeros((2, 3)), gw, gb, 1e3).reasons == {
        "wrong_shape": 2
    }


def test_availability_deadline_and_costs_are_reported(tmp_path: Path) -> None:
    s = scenario(
        fleet={"duty_cycle": 0.6, "dropout": 0.1, "boards": {"nano33ble": 0.5, "stm32h7": 0.5}},
        strategy={"fraction": 1.0, "deadline_s": 0.2},
    )
    srv = run(s, tmp_path)
    for r in srv.rows[1:]:
        assert (
            r.devices_available < 30 and r.devices_sampled == r.devices_available
        )  # fraction 1: every awake device
        assert r.stragglers > 0  # slow BLE boards miss the deadline
        assert r.devices_trained == r.devices_sampled - r.stragglers - r.devices_dropped
        assert r.energy_j > 0 and r.bytes_up > 0 and r.virtual_s <= 0.2
    log = np.load(tmp_path / "device_rounds" / "r000002.npz")
    assert set(np.unique(log["status"])) <= {0, 1, 3} and (log["energy_j"] > 0).all()


def test_resume_after_a_kill_gives_exactly_the_uninterrupted_results(tmp_path: Path) -> None:
    s = scenario(
        strategy={"name": "fedadam", "server_lr": 0.05, "personalize": 0.5},
        fleet={"battery_j": 0.5, "battery_min_j": 0.1, "harvest_j_per_round": 0.01},
    )
    full = run(s, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(s, tmp_path / "cut", stop_after=2)
    resumed = run(s, tmp_path / "cut", resume=True)
    assert _rows(resumed) == _rows(full)
    assert json.dumps(resumed.curves) == json.dumps(full.curves)
    assert np.array_equal(resumed.head.weights, full.head.weights) and np.array_equal(
        resumed.head.bias, full.head.bias
    )
    assert resumed.head.output_scale == full.head.output_scale


def _drift_scenario(drift: list[dict], **over: dict) -> object:
    d: dict = {
        "name": "drift",
        "seed": 3,
        "rounds": 6,
        "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {
            "devices": 24,
            "devices_per_gateway": 6,
            "samples_per_device": 12,
            "test_samples_per_device": 10,
            "cache_size": 16,
            "new_samples_per_round": 4,
            "pool_per_class": 16,
        },
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.1},
        "strategy": {"fraction": 1.0},
        "drift": drift,
        "runtime": {"engine": "inline"},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return scenario_from_dict(d)


def test_two_events_on_one_group_give_one_old_distribution_point_per_round(tmp_path: Path) -> None:
    from fedtiny.report.drift import drift_metrics

    events = [
        {"at": 2, "fraction": 0.5, "group": "moved", "condition": {"brightness": 0.3}},
        {"at": 4, "target": "moved", "kind": "new_class", "classes": [9]},
    ]
    srv = run(_drift_scenario(events), tmp_path)
    for key, per_group in srv.curves.items():
        for g, c in per_group.items():
            assert len(c) == 7, (key, g, len(c))  # rounds 0..6: the panels' x-axis is rounds
    old, fed = srv.curves["federated@old"]["moved"], srv.curves["federated"]["moved"]
    assert not np.isnan(old[0]) and old[1] == fed[1]  # round 1 is the group's last round on its old data
    m = drift_metrics(srv.curves, [("moved", 2), ("moved", 4)])
    assert set(m) == {"moved", "moved@4"}
    for key in m:
        for meth, v in m[key].items():
            assert v["old_pre_drift"] == round(srv.curves[f"{meth}@old"]["moved"][1], 4)
            assert v["forgetting"] == round(
                v["old_pre_drift"] - round(srv.curves[f"{meth}@old"]["moved"][-1], 4), 4
            )


def test_every_accuracy_has_its_interval_in_rows_curves_and_csv(tmp_path: Path) -> None:
    import csv

    from fedtiny.results import write_rounds_csv

    s = _drift_scenario(
        [{"at": 3, "fraction": 0.5, "group": "moved", "condition": {"brightness": 0.3}}],
        strategy={"personalize": 0.5},
    )
    srv = run(s, tmp_path)
    for r in srv.rows:
        for base in (
            "accuracy",
            "accuracy_global",
            "accuracy_static",
            "accuracy_local",
            "accuracy_personalized",
        ):
            v, lo, hi = getattr(r, base), getattr(r, base + "_lo"), getattr(r, base + "_hi")
            assert lo <= v <= hi and hi - lo > 0.01, (base, lo, v, hi)
        for g, v in r.group_accuracy.items():
            assert r.group_accuracy_lo[g] <= v <= r.group_accuracy_hi[g]
    for m in ("federated", "static", "local-only", "personalized"):
        for g in ("all", "fleet", "moved"):
            c, lo, hi = (srv.curves[m + b][g] for b in ("", "_lo", "_hi"))
            assert all(a <= b <= z for a, b, z in zip(lo, c, hi))
    assert set(srv.curves["static_diff_se"]) == {"all", "fleet", "moved"}
    write_rounds_csv(srv.rows, tmp_path / "rounds.csv")
    with (tmp_path / "rounds.csv").open() as fh:
        head = next(csv.reader(fh))
    i = head.index("accuracy_moved")
    assert head[i + 1 : i + 3] == ["accuracy_moved_lo", "accuracy_moved_hi"]
    assert head[head.index("accuracy") + 1] == "accuracy_lo"


def test_dropout_happens_after_sampling_and_every_status_is_recorded(tmp_path: Path) -> None:
    from fedtiny.runner import _concat_device_log
    from fedtiny.server.fleet_server import STATUS

    s = _drift_scenario([], fleet={"dropout": 0.3, "battery_j": 5.0}, rounds=4)
    srv = run(s, tmp_path)
    assert sum(r.devices_dropped for r in srv.rows) > 0
    for r in srv.rows[1:]:
        assert r.devices_available == r.devices_sampled == 24  # dropout does not make devices unavailable
        assert r.devices_trained == 24 - r.devices_dropped - r.stragglers
    _concat_device_log(tmp_path)
    log = np.load(tmp_path / "device_rounds.npz")
    assert list(log["status_names"]) == list(STATUS)
    dropped = log["status"] == STATUS.index("dropped")
    assert dropped.sum() == sum(r.devices_dropped for r in srv.rows)
    assert (log["energy_j"][dropped] > 0).all() and (log["bytes_up"][dropped] == 0).all()
    assert (log["bytes_down"][dropped] > 0).all()
    trained = log["status"] == STATUS.index("trained")
    assert (log["energy_j"][dropped] < log["energy_j"][trained].min()).all()  # no uplink, but the training
    # asleep devices: a count and a bit mask per round
    s2 = _drift_scenario([], fleet={"duty_cycle": 0.6}, rounds=3)
    srv2 = run(s2, tmp_path / "sleep")
    _concat_device_log(tmp_path / "sleep")
    log2 = np.load(tmp_path / "sleep" / "device_rounds.npz")
    awake = np.unpackbits(log2["awake_bits"], axis=1)[:, :24].astype(bool)
    assert list(log2["asleep_round"]) == [1, 2, 3]
    for i, r in enumerate(srv2.rows[1:]):
        assert log2["asleep_count"][i] == 24 - r.devices_available == (~awake[i]).sum() > 0
        sampled = log2["device"][log2["round"] == r.round]
        assert awake[i, sampled].all()


def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from fedtiny.errors import FedTinyError
    from fedtiny.server.checkpoint import load_checkpoint

    d = tmp_path / "checkpoint"
    d.mkdir()
    assert load_checkpoint(d) is None  # none yet: a run starts from round 1
    (d / "latest.json").write_text('{"round": 2}')
    np.savez(d / "state-000002.npz", head_w=np.zeros((2, 3), np.int8))
    (d / "state-000002.json").write_text("{}")
    with pytest.raises(FedTinyError, match=r"state-000002\.npz: missing head_s, head_b, head_q, battery"):
        load_checkpoint(d)
    (d / "latest.json").write_text("{}")
    with pytest.raises(FedTinyError, match=r"latest\.json: expected"):
        load_checkpoint(d)


def test_every_method_is_scored_as_a_board_runs_it_so_all_agree_before_learning(tmp_path: Path) -> None:
    """Local-only and personalized heads are re-quantized to int8 as deployed (issue 19 §4): at round 0 every
    method is the deployed int8 head, and their accuracies are the same number."""
    srv = run(scenario(strategy={"personalize": 0.5}), tmp_path)
    r0 = srv.rows[0]
    assert r0.accuracy_static == r0.accuracy_local == r0.accuracy_personalized
    c = srv.curves
    for group in ("all", "moved"):
        assert c["federated"][group][0] == c["static"][group][0] == c["local-only"][group][0]
    assert srv.rows[-1].accuracy_local != r0.accuracy_local  # the local heads did learn (and were scored)
