"""Helpers shared by the board and firmware tests (not a test module: pytest collects nothing here)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.ondevice import (
    FeatureCache,
    Int8Head,
    TrainConfig,
    TrainJob,
    TrainResult,
    dequantize_head,
    train_heads_fixed,
)


def fixed_reference(
    head: Int8Head,
    feats: np.ndarray,
    y: np.ndarray,
    device_id: int,
    *,
    capacity: int = 200,
    batch: int = 8,
    lr: float = float(np.float32(0.05)),
) -> TrainResult:
    """train_heads_fixed (2 epochs, seed 7, round 1) of one device on a cache of ``capacity`` holding exactly
    these features: the spec a board's fixed-point TRAIN matches bit for bit. The result's ``weights``,
    ``bias`` and ``loss`` are per device (index 0)."""
    cache = FeatureCache(1, capacity, head.num_features)
    cache.push(feats[None], y[None])
    fl = dequantize_head(head)
    return train_heads_fixed(
        fl.weights,
        fl.bias,
        cache.features,
        cache.labels,
        cache.count,
        TrainJob(
            TrainConfig(2, batch, lr, 0.0, 0.0, 0.0),
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=7,
            round_=1,
            device_ids=np.array([device_id]),
        ),
    )


@contextmanager
def served_board(flash: Path, device_id: int, key: bytes, **kwargs: Any) -> Iterator[str]:
    """A virtual board (fedtiny.clients.board.server.serve_board, ``kwargs`` passed on) on a free loopback TCP port, in
    a daemon thread: yields its URI once it listens; stops it and joins the thread on the way out."""
    from fedtiny.clients.board.server import serve_board

    stop, ready = threading.Event(), threading.Event()
    addr: list[str] = []

    def on_ready(a: str) -> None:
        addr.append(a)
        ready.set()

    th = threading.Thread(
        target=serve_board,
        args=("socket://127.0.0.1:0", str(flash), device_id, key),
        kwargs={**kwargs, "stop": stop, "ready": on_ready},
        daemon=True,
    )
    th.start()
    try:
        assert ready.wait(10)
        yield addr[0]
    finally:
        stop.set()
        th.join(5)
