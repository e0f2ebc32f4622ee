"""A gateway's kept cache rows (fedtiny/fleet/ring.py) are exactly a fresh draw of every device's ring buffer,
whatever the order of rounds and devices, across drift segments, ring wrap-around and a memory budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedtiny.fleet.ring as ring
from fedtiny.fleet.data import FleetData
from fedtiny.fleet.ring import CacheRows
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec


def _fleet(tmp: Path, per_round: int) -> FleetData:
    s = scenario_from_dict(
        {
            "name": "ring",
            "seed": 9,
            "rounds": 12,
            "task": {"name": "digits"},
            "model": {"test_samples": 50, "factory_samples": 60},
            "fleet": {
                "devices": 700,
                "devices_per_gateway": 350,
                "samples_per_device": 10,
                "cache_size": 16,
                "new_samples_per_round": per_round,
                "test_samples_per_device": 5,
                "pool_per_class": 12,
                "variants": 3,
                "spread": {"rotation_deg": 5.0},
            },
            "drift": [
                {"at": 3, "group": "moved", "fraction": 0.3, "kind": "label_shift", "alpha": 0.2},
                {"at": 7, "group": "moved", "condition": {"brightness": 0.4}},
            ],
        }
    )
    prepare_synthetic(fleet_spec(s), tmp)
    return FleetData(tmp / "fleet")


@pytest.mark.parametrize("per_round", [0, 3, 16, 40])
def test_kept_rows_equal_a_fresh_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_round: int
) -> None:
    monkeypatch.setattr(ring, "BLOCK", 64)  # many blocks, devices straddling them
    data = _fleet(tmp_path, per_round)
    kept, small = CacheRows(data), CacheRows(data, budget=3 * 64 * (16 * 4 + 8))  # 3 blocks, then fresh draws
    assert kept.enabled
    rng = np.random.default_rng(per_round)
    for round_ in [0, 1, 2, 3, 4, 4, 6, 2, 7, 8, 11, 12, 12]:  # repeats, skips and going back
        devices = rng.choice(700, rng.integers(1, 700), replace=False)
        if round_ % 2:
            devices = np.sort(devices)
        want, count = data.cache_indices(devices, round_)
        for cache in (kept, small):
            got, got_count = cache.indices(devices, round_)
            assert got_count == count and got.dtype == np.int32
            assert np.array_equal(got, want), (round_, cache.budget)
    assert small.blocks == 3 and kept.blocks == -(-700 // 64) and small.nbytes <= small.budget
