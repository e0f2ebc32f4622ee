"""The compiled sample draws (fedtiny/fleet/draw.py) pick exactly the pool rows of the numpy reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtiny.fleet.data import FleetData
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetData:
    s = scenario_from_dict(
        {
            "name": "draw",
            "seed": 5,
            "rounds": 4,
            "task": {"name": "digits"},
            "model": {"test_samples": 50, "factory_samples": 60},
            "fleet": {
                "devices": 300,
                "devices_per_gateway": 100,
                "samples_per_device": 24,
                "cache_size": 16,
                "new_samples_per_round": 5,
                "test_samples_per_device": 7,
                "pool_per_class": 12,
                "variants": 3,
                "spread": {"rotation_deg": 5.0},
            },
            "drift": [{"at": 2, "group": "moved", "fraction": 0.3, "kind": "label_shift", "alpha": 0.2}],
        }
    )
    out = Path(tmp_path_factory.mktemp("draw"))
    prepare_synthetic(fleet_spec(s), out)
    return FleetData(out / "fleet")


@pytest.mark.parametrize("round_", [0, 1, 3, 4])
def test_compiled_cache_rows_equal_the_numpy_reference(fleet: FleetData, round_: int) -> None:
    devices = np.array([0, 7, 150, 151, 299, 3])
    idx, count = fleet.cache_indices(devices, round_)
    assert idx.dtype == np.int32 and idx.shape == (len(devices), count)
    t = fleet.collected(round_)
    slot = np.arange(count, dtype=np.int64)
    j = slot + fleet.capacity * ((t - 1 - slot) // fleet.capacity)
    r_j = np.where(j < fleet.n_initial, 0, 1 + (j - fleet.n_initial) // max(fleet.per_round, 1))
    ref = fleet._draw_numpy(devices, j, fleet.segment_of_round(r_j), 1)
    np.testing.assert_array_equal(idx, ref)
    feats, labels = fleet.gather(idx)
    assert (fleet.flat_labels[idx] == labels).all()


@pytest.mark.parametrize("balanced", [False, True])
def test_compiled_test_rows_equal_the_numpy_reference(fleet: FleetData, balanced: bool) -> None:
    fleet.balanced_test = balanced
    devices = np.arange(300)
    for seg in (0, 1):
        got = fleet.test_indices(devices, seg)
        j = np.arange(fleet.n_test, dtype=np.int64)
        ref = fleet._draw_numpy(devices, j, np.full(fleet.n_test, seg, dtype=np.int64), 11, test=True)
        np.testing.assert_array_equal(got, ref)
    fleet.balanced_test = False


def test_gateways_are_sized_from_the_fleet_and_the_cpus_unless_set() -> None:
    from fedtiny.fleet.partition import auto_devices_per_gateway
    from fedtiny.plan.resolve import layout_of

    # 2 CPUs, half a CPU per gateway: 4 at once; at most 50,000 devices per gateway; gateways a multiple of 4
    assert [auto_devices_per_gateway(n, 2, 0.5) for n in (3, 20, 100_000, 1_000_000)] == [
        1,
        5,
        25_000,
        50_000,
    ]
    assert auto_devices_per_gateway(1_000_000, 2, 0.5) * 20 == 1_000_000  # 20 gateways, 5 waves of 4
    assert auto_devices_per_gateway(1_000_000, 6, 1.0) == 41_667  # 24 gateways (4 waves of 6)

    def sc(per: int, engine: str) -> Any:
        return scenario_from_dict(
            {"fleet": {"devices": 120_000, "devices_per_gateway": per}, "runtime": {"engine": engine}}
        )

    assert layout_of(sc(7, "simulation")).devices_per_gateway == 7  # an explicit value is kept
    assert layout_of(sc(0, "inline")).gateways == 3  # one at a time in-process: 50,000 devices at most each
