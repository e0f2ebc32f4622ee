"""The field-trial server aggregates through the simulation's step (fedtiny/server/updates.py): the same
head from the same device updates whatever the gateways and their order; duplicates, stale and bad updates
are counted and left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtiny.field.server import FieldServer
from fedtiny.model.flatbuffer import model_io, read_head
from fedtiny.ondevice import dequantize_head
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import strategy_spec
from fedtiny.server.strategy import DeviceStrategy
from fedtiny.server.updates import aggregate_step


def _reply(
    g_w: np.ndarray, g_b: np.ndarray, devs: list[int], uids: list[int], rounds: list[int], seed: int
) -> dict[str, np.ndarray]:
    """A gateway's train reply: each device's head moved from the global one by a seeded step."""
    rng = np.random.default_rng(seed)
    k = len(devs)
    return {
        "device_ids": np.array(devs, dtype=np.int64),
        "update_ids": np.array(uids, dtype=np.int64),
        "rounds": np.array(rounds, dtype=np.int64),
        "weights": (g_w[None] + rng.normal(0, 0.05, (k, *g_w.shape))).astype(np.float32),
        "bias": (g_b[None] + rng.normal(0, 0.05, (k, *g_b.shape))).astype(np.float32),
        "num_examples": np.array([10 * (i + 1) for i in range(k)], dtype=np.int64),
        "loss": np.linspace(0.5, 1.0, k).astype(np.float32),
    }


@pytest.fixture
def server(tmp_path: Path, tiny_tflite: bytes) -> FieldServer:
    s = scenario_from_dict(
        {"name": "f", "rounds": 2, "task": {"name": "digits"}, "strategy": {"name": "fedavg"}}
    )
    rng = np.random.default_rng(1)
    (tmp_path / "base_int8.tflite").write_bytes(tiny_tflite)
    np.save(tmp_path / "calib_feats.npy", rng.integers(-128, 128, (40, 64)).astype(np.int8))
    np.save(tmp_path / "global_test_feats.npy", rng.integers(-128, 128, (20, 64)).astype(np.int8))
    np.save(tmp_path / "global_test_labels.npy", rng.integers(0, 5, 20).astype(np.int16))
    return FieldServer(s, tmp_path, read_head(tiny_tflite), gateways=2)


def test_field_updates_go_through_the_simulation_step(server: FieldServer, tiny_tflite: bytes) -> None:
    head0 = server.head
    g = dequantize_head(head0)
    a = _reply(g.weights, g.bias, [3, 1], [7, 5], [1, 1], seed=2)
    b = _reply(g.weights, g.bias, [2, 4, 5], [1, 1, 1], [1, 0, 1], seed=3)  # device 4: stale (round 0)
    b["weights"][2, 0, 0] = np.nan  # device 5: rejected
    step = server.take_updates(1, [(11, a), (12, b)])
    assert (server.stale, server.duplicates, server.rejected) == (1, 0, 1)
    assert step.trained == 3 and step.accepted is not None
    assert step.accepted.device_ids.tolist() == [1, 2, 3]
    # the simulation's path, fed one device per part in another order, gives the same int8 head
    fresh = {1: (a, 1), 3: (a, 0), 2: (b, 0)}
    parts = [
        {k: fresh[d][0][k][[fresh[d][1]]] for k in ("weights", "bias", "device_ids", "num_examples", "loss")}
        for d in (2, 3, 1)
    ]
    calib = np.load(server.trial_dir / "calib_feats.npy")
    s = server.scenario
    ref = aggregate_step(
        1,
        head0,
        parts,
        DeviceStrategy.from_spec(strategy_spec(s)),
        s.strategy.max_update_norm,
        calib,
        model_io(tiny_tflite).per_tensor,
    )
    assert np.array_equal(server.head.weights, ref.head.weights) and np.array_equal(
        server.head.bias, ref.head.bias
    )
    assert server.head.output_scale == ref.head.output_scale
    # and it is FedAvg: the example-weighted mean of the accepted heads, within half an int8 step per channel
    n = np.array([20.0, 10.0, 10.0])  # devices 1, 2, 3
    w = np.stack([a["weights"][1], b["weights"][0], a["weights"][0]]).astype(np.float64)
    mean = np.tensordot(n / n.sum(), w, axes=1)
    new = dequantize_head(server.head)
    assert not np.array_equal(server.head.weights, head0.weights)
    assert (np.abs(new.weights - mean) <= 0.5001 * server.head.weight_scales[:, None]).all()
    # round 2: a re-sent update is counted once; the new one is aggregated
    again = _reply(new.weights, new.bias, [3, 3], [7, 8], [1, 2], seed=4)
    step2 = server.take_updates(2, [(11, again)])
    assert server.duplicates == 1 and step2.trained == 1 and step2.accepted is not None
    assert step2.accepted.device_ids.tolist() == [3]
