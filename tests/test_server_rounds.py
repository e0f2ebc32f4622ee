"""The round loop in-process (same gateway code, no Ray): rejection of bad updates, realism, resume."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from clients.simulated.gateway import handle
from fedtiny.config import scenario_from_dict
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.server.aggregate import validate_updates
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


def scenario(**over: dict) -> object:
    d: dict = {
        "name": "srv", "seed": 5, "rounds": 5,
        "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {"devices": 30, "devices_per_gateway": 7, "samples_per_device": 12, "test_samples_per_device": 10,
                  "cache_size": 16, "new_samples_per_round": 4, "pool_per_class": 16, "variants": 2,
                  "spread": {"rotation_deg": 4.0}},
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
    layout, head = prepare_synthetic(s, out)
    srv = FleetServer(s, layout, out / "fleet", head, out_dir=out, stop_after=stop_after)
    if resume:
        assert srv.load_checkpoint()
    srv.run(InlineTransport(handle))
    return srv


def _rows(srv: FleetServer) -> str:
    return json.dumps([{k: v for k, v in asdict(r).items() if k != "wall_s"} for r in srv.rows])  # NaN-safe


@pytest.mark.parametrize("uplink", ["float32", "int8"])
def test_all_faulty_devices_are_rejected_counted_and_do_not_move_the_model(tmp_path: Path, uplink: str) -> None:
    s = scenario(fleet={"faulty_fraction": 1.0, "fault": "nan"}, strategy={"uplink": uplink})
    srv = run(s, tmp_path)
    assert srv.rejected_total == sum(r.devices_sampled for r in srv.rows[1:]) == 5 * 15
    assert srv.rejected_reasons["non_finite"] == 75
    assert np.array_equal(srv.head.weights, srv.initial_head.weights) and np.array_equal(srv.head.bias, srv.initial_head.bias)
    assert all(r.devices_trained == 0 for r in srv.rows[1:])


@pytest.mark.parametrize("fault", ["inf", "scale"])
def test_rejected_updates_leave_the_same_model_as_any_other_rejected_fault(tmp_path: Path, fault: str) -> None:
    ref = run(scenario(fleet={"faulty_fraction": 0.3, "fault": "nan"}), tmp_path / "nan")
    other = run(scenario(fleet={"faulty_fraction": 0.3, "fault": fault}), tmp_path / fault)
    assert other.rejected_total == ref.rejected_total > 0
    assert np.array_equal(other.head.weights, ref.head.weights)
    assert not np.array_equal(ref.head.weights, ref.initial_head.weights)  # honest devices still moved it


def test_robust_aggregation_resists_sign_flipping_poison(tmp_path: Path) -> None:
    clean = run(scenario(), tmp_path / "clean")
    mean = run(scenario(fleet={"faulty_fraction": 0.2, "fault": "sign_flip"}), tmp_path / "mean")
    med = run(scenario(fleet={"faulty_fraction": 0.2, "fault": "sign_flip"}, strategy={"name": "median"}), tmp_path / "med")
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
    assert validate_updates(np.zeros((2, 4, 3), np.float32), np.zeros((2, 3)), gw, gb, 1e3).reasons == {"wrong_shape": 2}


def test_availability_deadline_and_costs_are_reported(tmp_path: Path) -> None:
    s = scenario(fleet={"duty_cycle": 0.6, "dropout": 0.1, "boards": {"nano33ble": 0.5, "stm32h7": 0.5}},
                 strategy={"fraction": 1.0, "deadline_s": 0.2})
    srv = run(s, tmp_path)
    for r in srv.rows[1:]:
        assert r.devices_available < 30 and r.devices_sampled == r.devices_available
        assert r.stragglers > 0 and r.devices_trained == r.devices_sampled - r.stragglers  # slow BLE boards miss it
        assert r.energy_j > 0 and r.bytes_up > 0 and r.virtual_s <= 0.2
    log = np.load(tmp_path / "device_rounds" / "r000002.npz")
    assert set(np.unique(log["status"])) <= {0, 1} and (log["energy_j"] > 0).all()


def test_resume_after_a_kill_gives_exactly_the_uninterrupted_results(tmp_path: Path) -> None:
    s = scenario(strategy={"name": "fedadam", "server_lr": 0.05, "personalize": 0.5}, fleet={"battery_j": 0.5, "battery_min_j": 0.1, "harvest_j_per_round": 0.01})
    full = run(s, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(s, tmp_path / "cut", stop_after=2)
    resumed = run(s, tmp_path / "cut", resume=True)
    assert _rows(resumed) == _rows(full)
    assert json.dumps(resumed.curves) == json.dumps(full.curves)
    assert np.array_equal(resumed.head.weights, full.head.weights) and np.array_equal(resumed.head.bias, full.head.bias)
    assert resumed.head.output_scale == full.head.output_scale
