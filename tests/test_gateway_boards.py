"""The gateway's per-round work with boards over real sockets: redeploy, replay, train, exactly-once acks,
and the arithmetic each board asks for (a board without an FPU trains in fixed point)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from clients.board import serve_board
from clients.board.device import BoardConfig, default_head
from clients.gateway.boards import GatewayBoards, Replay
from fedtiny.link.messages import TrainRequest
from fedtiny.ondevice import TrainConfig, dequantize_head, train_heads, train_heads_fixed

KEY = bytes(range(32))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gateway_trains_float_and_fixed_point_boards_and_counts_each_update_once(tmp_path: Path) -> None:
    head = default_head(4, 16, seed=5)
    rng = np.random.default_rng(0)
    replay = tmp_path / "replay"
    replay.mkdir()
    data = {}
    for dev in (1, 2):
        f = rng.integers(-128, 128, (30, 16)).astype(np.int8)
        y = rng.integers(0, 4, 30).astype(np.int16)
        data[dev] = (f, y)
        np.savez(replay / f"device_{dev}.npz", segments=np.array(1), train_feats_0=f, train_labels_0=y,
                 test_feats_0=f[:10], test_labels_0=y[:10])
    stop = threading.Event()
    uris = []
    for dev, arith in ((1, "both"), (2, "fixed")):
        uri = f"socket://127.0.0.1:{_port()}"
        uris.append(uri)
        cfg = BoardConfig(cache_capacity=64, train_arith=arith)
        threading.Thread(target=serve_board, args=(uri, str(tmp_path / f"b{dev}.flash"), dev, KEY), daemon=True,
                         kwargs=dict(head=head, cfg=cfg, stop=stop, ready=lambda _a: None)).start()
    time.sleep(0.3)
    try:
        gw = GatewayBoards(uris, KEY, Replay(replay))
        req = TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1)
        golden = np.zeros((2, 16), np.int8)
        out = gw.train(head, golden, req, 0, acks={})
        assert [o.error for o in out] == ["", ""]
        fh = dequantize_head(head)
        kw = dict(input_scale=head.input_scale, input_zero_point=head.input_zero_point, seed=9, round_=1)
        for o, trainer in zip(out, (train_heads, train_heads_fixed)):
            f, y = data[o.device_id]
            ref = trainer(fh.weights, fh.bias, f[None], y[None].astype(np.int64), np.array([30]), TrainConfig(1, 8, 0.05),
                          device_ids=np.array([o.device_id]), **kw)
            np.testing.assert_allclose(o.update["weights"], ref.weights[0], rtol=1e-5, atol=1e-6)
        # not acknowledged yet: the next round re-reads the same updates instead of training twice
        again = gw.train(head, golden, req, 0, acks={})
        assert [o.update["update_id"] for o in again] == [o.update["update_id"] for o in out]
        # acknowledged: the boards train anew and report new update ids
        acks = {o.device_id: int(o.update["update_id"]) for o in out}
        fresh = gw.train(head, golden, TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 2), 0, acks=acks)
        assert all(n.update["update_id"] != o.update["update_id"] for n, o in zip(fresh, out))
    finally:
        stop.set()


def test_an_update_that_fails_verification_is_dropped_not_stuck_on_the_board(tmp_path: Path) -> None:
    head = default_head(4, 16, seed=5)
    replay = tmp_path / "replay"
    replay.mkdir()
    f = np.random.default_rng(1).integers(-128, 128, (20, 16)).astype(np.int8)
    y = (np.arange(20) % 4).astype(np.int16)
    np.savez(replay / "device_1.npz", segments=np.array(1), train_feats_0=f, train_labels_0=y,
             test_feats_0=f, test_labels_0=y)
    stop = threading.Event()
    uri = f"socket://127.0.0.1:{_port()}"
    threading.Thread(target=serve_board, args=(uri, str(tmp_path / "b.flash"), 1, KEY), daemon=True,
                     kwargs=dict(head=head, cfg=BoardConfig(cache_capacity=32), stop=stop, ready=lambda _a: None)).start()
    time.sleep(0.3)
    try:
        wrong = GatewayBoards([uri], bytes(32), Replay(replay))  # not the board's fleet key: every tag fails
        req = TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1)
        first = wrong.train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
        assert "bad HMAC" in first[0].error and not first[0].update
        second = wrong.train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
        assert "dropped a pending update" in second[0].error
        # the board was not stuck: with the right key it trains and reports a verified update
        right = GatewayBoards([uri], KEY, Replay(replay)).train(head, np.zeros((1, 16), np.int8), req, 0, acks={})
        assert right[0].error == "" and right[0].update["device_id"] == 1
    finally:
        stop.set()


def test_a_board_that_vanished_is_reported_and_the_round_goes_on(tmp_path: Path) -> None:
    head = default_head(4, 16, seed=5)
    replay = tmp_path / "replay"
    replay.mkdir()
    f = np.random.default_rng(2).integers(-128, 128, (20, 16)).astype(np.int8)
    y = (np.arange(20) % 4).astype(np.int16)
    np.savez(replay / "device_1.npz", segments=np.array(1), train_feats_0=f, train_labels_0=y,
             test_feats_0=f, test_labels_0=y)
    stop = threading.Event()
    alive, gone = f"socket://127.0.0.1:{_port()}", f"socket://127.0.0.1:{_port()}"  # nobody listens on `gone`
    threading.Thread(target=serve_board, args=(alive, str(tmp_path / "b.flash"), 1, KEY), daemon=True,
                     kwargs=dict(head=head, cfg=BoardConfig(cache_capacity=32), stop=stop, ready=lambda _a: None)).start()
    time.sleep(0.3)
    try:
        gw = GatewayBoards([gone, alive], KEY, Replay(replay), timeout=0.2)
        t0 = time.time()
        out = gw.train(head, np.zeros((1, 16), np.int8), TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 9, 1), 0, acks={})
        assert out[0].error.startswith(gone) and not out[0].update
        assert out[1].error == "" and out[1].update["device_id"] == 1
        ev = gw.evaluate(head, np.zeros((1, 16), np.int8), 0, acks={1: int(out[1].update["update_id"])})
        assert ev[0].error and ev[1].update["n"] == 20
        assert time.time() - t0 < 30
    finally:
        stop.set()
