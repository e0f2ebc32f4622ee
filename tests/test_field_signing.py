"""The field server signs redeploys (issue 10): the key stays on the server, counters rise with every redeploy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.clients.gateway.boards import GatewayBoards
from fedtiny.errors import DeviceError, FedTinyError, ProtocolError
from fedtiny.field.deploy_signing import COUNTER_FILE, DeploySigner, check_signed_head
from fedtiny.link.session import BoardSession
from fedtiny.link.signing import generate_key, parse_image, raw_public, verify_image
from fedtiny.link.transport import InProcessTransport

FEATS = np.random.default_rng(5).integers(-128, 128, (4, 64)).astype(np.int8)
KEY = generate_key()


def test_counters_strictly_increase_persist_and_follow_the_clock(tmp_path: Path) -> None:
    s = DeploySigner(KEY, tmp_path, clock=1000.0)
    counters = [parse_image(s.sign_head(default_head(seed=i))).security_counter for i in range(3)]
    assert counters == [1000, 1001, 1002]  # the clock is the floor, the persisted value forces +1
    assert json.loads((tmp_path / COUNTER_FILE).read_text()) == {"security_counter": 1002}
    resumed = DeploySigner(KEY, tmp_path, clock=900.0)  # a restarted server whose clock went back
    assert parse_image(resumed.sign_head(default_head(seed=4))).security_counter == 1003
    later = DeploySigner(KEY, tmp_path, clock=5000.0)
    image = later.sign_head(default_head(seed=5))
    assert verify_image(image, [raw_public(KEY)]).security_counter == 5000
    assert check_signed_head(image, default_head(seed=5)) == 5000
    with pytest.raises(FedTinyError, match="payload is not the head sent with it"):
        check_signed_head(image, default_head(seed=6))


@pytest.mark.parametrize(
    ("content", "match"),
    [("{", "unreadable security counter"), ('{"security_counter": -1}', "integer in 0..4294967295")],
)
def test_a_damaged_counter_file_is_one_clear_error(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / COUNTER_FILE).write_text(content)
    with pytest.raises(FedTinyError, match=match):
        DeploySigner(KEY, tmp_path).sign_head(default_head(seed=1))


def test_counter_past_u32_is_refused(tmp_path: Path) -> None:
    (tmp_path / COUNTER_FILE).write_text('{"security_counter": 4294967295}')
    with pytest.raises(FedTinyError, match="would pass 4294967295"):
        DeploySigner(KEY, tmp_path, clock=0.0).sign_head(default_head(seed=1))


def test_board_takes_server_signed_heads_in_order_and_refuses_a_replayed_older_one(tmp_path: Path) -> None:
    board = VirtualBoard(BoardConfig(trust_keys=(raw_public(KEY),)), str(tmp_path / "b.flash"))
    s = BoardSession(InProcessTransport(board))
    s.hello()
    signer = DeploySigner(KEY, tmp_path, clock=2000.0)
    first = signer.sign_head(default_head(seed=2))
    second = signer.sign_head(default_head(seed=3))
    s.deploy_head(default_head(seed=2), FEATS, signed_image=first)
    s.deploy_head(default_head(seed=3), FEATS, signed_image=second)
    assert s.get_head().equals(default_head(seed=3)) and board.meta.sec_floor == 2001
    with pytest.raises(DeviceError, match="DOWNGRADE"):  # the older signed head, replayed
        s.deploy_head(default_head(seed=2), FEATS, signed_image=first)
    with pytest.raises(ProtocolError, match="not the head to deploy"):  # image and head disagree
        s.deploy_head(default_head(seed=4), FEATS, signed_image=second)
    assert s.get_head().equals(default_head(seed=3))


def test_gateway_without_a_key_forwards_the_server_signed_image(tmp_path: Path) -> None:
    """A gateway holding no private key deploys what the server signed (GatewayBoards over a socket board)."""
    import socket
    import threading

    from fedtiny.clients.board import serve_board

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        uri = f"socket://127.0.0.1:{probe.getsockname()[1]}"
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(
        target=serve_board,
        args=(uri, str(tmp_path / "g.flash"), 7, None),
        kwargs=dict(cfg=BoardConfig(trust_keys=(raw_public(KEY),)), stop=stop, ready=lambda _a: ready.set()),
        daemon=True,
    )
    t.start()
    try:
        assert ready.wait(10)
        gw = GatewayBoards([uri], None, timeout=5.0)
        head = default_head(seed=8)
        image = DeploySigner(KEY, tmp_path, clock=3000.0).sign_head(head)
        out = gw.evaluate(head, FEATS, 0, {}, image)
        assert out[0].device_id == 7 and "CACHE_EMPTY" in out[0].error  # deployed, then nothing to evaluate
        assert gw.signing_key is None
        from fedtiny.link.transport import open_transport

        check = BoardSession(open_transport(uri), timeout=5.0)
        try:
            assert check.get_head().equals(head)  # the board runs the server-signed head
        finally:
            check.close()
        unsigned = gw.evaluate(default_head(seed=9), FEATS, 0, {})  # no image, no key: refused by the board
        assert "AUTH_FAILED" in unsigned[0].error
    finally:
        stop.set()
        t.join(10)
