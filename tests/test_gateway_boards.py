"""The gateway's per-round work with boards over real sockets: redeploy, replay, train, exactly-once acks,
and the arithmetic each board asks for (a board without an FPU trains in fixed point)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.board import serve_board
from fedtiny.clients.board.device import BoardConfig, default_head
from fedtiny.clients.gateway.boards import GatewayBoards, Replay
from fedtiny.link.messages import TrainRequest
from fedtiny.ondevice import Int8Head, TrainConfig, TrainJob, dequantize_head, train_heads, train_heads_fixed

KEY = bytes(range(32))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_replay(root: Path, device_id: int, feats: np.ndarray, labels: np.ndarray, n_test: int) -> Path:
    """The replay file `fedtiny serve` writes for one board: one segment of train and test features."""
    root.mkdir(exist_ok=True)
    np.savez(
        root / f"device_{device_id}.npz",
        segments=np.array(1),
        train_feats_0=feats,
        train_labels_0=labels,
        test_feats_0=feats[:n_test],
        test_labels_0=labels[:n_test],
    )
    return root


@pytest.fixture()
def start_board(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Serve virtual boards on free TCP ports (stopped at the end of the test); returns a starter."""
    stop = threading.Event()

    def start(device_id: int, head: Int8Head, cfg: BoardConfig) -> str:
        uri = f"socket://127.0.0.1:{_port()}"
        threading.Thread(
            target=serve_board,
            args=(uri, str(tmp_path / f"b{device_id}.flash"), device_id, KEY),
            daemon=True,
            kwargs=dict(head=head, cfg=cfg, stop=stop, ready=lambda _a: None),
        ).start()
        time.sleep(0.3)
        return uri

    yield start
    stop.set()


def test_gateway_trains_float_and_fixed_point_boards_and_counts_each_update_once(
    tmp_path: Path, start_board
) -> None:
    head = default_head(4, 16, seed=5)
    rng = np.random.default_rng(0)
    data = {}
    for dev in (1, 2):
        data[dev] = (
            rng.integers(-128, 128, (30, 16)).astype(np.int8),
            rng.integers(0, 4, 30).astype(np.int16),
        )
        replay = _write_replay(tmp_path / "replay", dev, *data[dev], n_test=10)
    uris = [
        start_board(dev, head, BoardConfig(cache_capacity=64, train_arith=arith))
        for dev, arith in ((1, "both"), (2, "fixed"))
    ]
    gw = GatewayBoards(uris, KEY, Replay(replay))
    req = TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1)
    golden = np.zeros((2, 16), np.int8)
    out = gw.train(head, golden, req, 0, acks={})
    assert [o.error for o in out] == ["", ""]
    fh = dequantize_head(head)
    kw = dict(input_scale=head.input_scale, input_zero_point=head.input_zero_point, seed=9, round_=1)
    for o, trainer in zip(out, (train_heads, train_heads_fixed)):
        f, y = data[o.device_id]
        ref = trainer(
            fh.weights,
            fh.bias,
            f[None],
            y[None].astype(np.int64),
            np.array([30]),
            TrainJob(TrainConfig(1, 8, 0.05), device_ids=np.array([o.device_id]), **kw),
        )
        np.testing.assert_allclose(o.update["weights"], ref.weights[0], rtol=1e-5, atol=1e-6)
    # not acknowledged yet: the next round re-reads the same updates instead of training twice
    again = gw.train(head, golden, req, 0, acks={})
    assert [o.update["update_id"] for o in again] == [o.update["update_id"] for o in out]
    # acknowledged: the boards train anew and report new update ids
    acks = {o.device_id: int(o.update["update_id"]) for o in out}
    fresh = gw.train(head, golden, TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 2), 0, acks=acks)
    assert all(n.update["update_id"] != o.update["update_id"] for n, o in zip(fresh, out))


def test_an_update_that_fails_verification_is_dropped_not_stuck_on_the_board(
    tmp_path: Path, start_board
) -> None:
    head = default_head(4, 16, seed=5)
    f = np.random.default_rng(1).integers(-128, 128, (20, 16)).astype(np.int8)
    replay = _write_replay(tmp_path / "replay", 1, f, (np.arange(20) % 4).astype(np.int16), n_test=20)
    uri = start_board(1, head, BoardConfig(cache_capacity=32))
    wrong = GatewayBoards([uri], bytes(32), Replay(replay))  # not the board's fleet key: every tag fails
    req = TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1)
    first = wrong.train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
    assert "bad HMAC" in first[0].error and not first[0].update
    second = wrong.train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
    assert "dropped a pending update" in second[0].error
    # the board was not stuck: with the right key it trains and reports a verified update
    right = GatewayBoards([uri], KEY, Replay(replay)).train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
    assert right[0].error == "" and right[0].update["device_id"] == 1


def test_a_board_that_vanished_is_reported_and_the_round_goes_on(tmp_path: Path, start_board) -> None:
    head = default_head(4, 16, seed=5)
    f = np.random.default_rng(2).integers(-128, 128, (20, 16)).astype(np.int8)
    replay = _write_replay(tmp_path / "replay", 1, f, (np.arange(20) % 4).astype(np.int16), n_test=20)
    alive = start_board(1, head, BoardConfig(cache_capacity=32))
    gone = f"socket://127.0.0.1:{_port()}"  # nobody listens here
    gw = GatewayBoards([gone, alive], KEY, Replay(replay), timeout=0.2)
    t0 = time.time()
    out = gw.train(
        head, np.zeros((1, 16), np.int8), TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1), 0, acks={}
    )
    assert out[0].error.startswith(gone) and not out[0].update
    assert out[1].error == "" and out[1].update["device_id"] == 1
    ev = gw.evaluate(head, np.zeros((1, 16), np.int8), 0, acks={1: int(out[1].update["update_id"])})
    assert ev[0].error and ev[1].update["n"] == 20
    assert time.time() - t0 < 30
