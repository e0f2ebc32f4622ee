"""The work of one simulated gateway: train or evaluate its devices with the on-device spec, vectorized."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtiny.fleet.data import FleetData
from fedtiny.ondevice import Int8Head, TrainConfig, dequantize_head, predict_int8, train_heads

_DATA: dict[str, FleetData] = {}


def fleet_data(path: str) -> FleetData:
    """One memory-mapped view per worker process (Ray reuses workers across rounds)."""
    if path not in _DATA:
        _DATA[path] = FleetData(Path(path))
    return _DATA[path]


def train_devices(
    head: Int8Head, data: FleetData, segment: int, devices: np.ndarray, cfg: TrainConfig,
    cache_size: int, seed: int, round_: int,
) -> dict[str, np.ndarray]:
    """Every device starts from the int8 head it holds, trains on its cache, returns its float head."""
    feats, labels = data.train(segment, devices)
    n = min(cache_size, feats.shape[1])
    fh = dequantize_head(head)
    res = train_heads(
        fh.weights, fh.bias, np.ascontiguousarray(feats[:, :n]), labels[:, :n].astype(np.int64),
        np.full(len(devices), n), cfg, input_scale=head.input_scale, input_zero_point=head.input_zero_point,
        seed=seed, round_=round_, device_ids=devices,
    )
    return {
        "device_ids": devices.astype(np.int64),
        "weights": res.weights,
        "bias": res.bias,
        "num_examples": np.full(len(devices), n, dtype=np.int64),
        "loss": res.loss,
    }


def evaluate_devices(head: Int8Head, data: FleetData, segment: int, devices: np.ndarray) -> dict[str, np.ndarray]:
    """Correct predictions of the deployed int8 head on each device's local test data."""
    feats, labels = data.test(segment, devices)
    pred = predict_int8(head, feats)
    return {
        "device_ids": devices.astype(np.int64),
        "correct": (pred == labels).sum(axis=1).astype(np.int64),
        "total": np.full(len(devices), labels.shape[1], dtype=np.int64),
    }
