"""The BLE path without a radio: BoardSession over Bumble (NUS, MTU 247, chunked both ways)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.link.messages import TrainRequest
from fedtiny.link.session import BoardSession

pytest.importorskip("bumble")

KEY = bytes(range(32))


@pytest.mark.timeout(60)
def test_session_over_bumble() -> None:
    from fedtiny.link.ble import BumbleTransport

    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    t = BumbleTransport(board)
    try:
        assert t.mtu == 247
        s = BoardSession(t, timeout=2.0, key=KEY)
        info = s.hello()
        assert info.C == 10
        feats = np.random.default_rng(0).integers(-128, 128, (100, 64)).astype(np.int8)
        s.push_samples(feats, np.arange(100) % 10, clear=True)
        s.train(TrainRequest(1, 16, 0.01, 0.0, 0.0, 0.0, 1, 1))
        upd = s.read_update()  # > 2 KB: many reassembled notifications
        s.ack_update(upd.update_id)
        new = default_head(seed=7)
        s.deploy_head(new, feats[:4])
        assert board.head.equals(new) and s.get_head().equals(new)
    finally:
        t.close()
