"""BoardSession against the virtual board: in-process, real TCP socket, pty; updates, auth, rollback."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head, serve_board
from fedtiny.errors import DeviceError, UpdateRejected
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import ImageKind, SlotState, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import head_forward_int8

KEY = bytes(range(32))
RNG = np.random.default_rng(0)
FEATS = RNG.integers(-128, 128, (120, 64)).astype(np.int8)
LABELS = RNG.integers(0, 10, 120)


def _round(s: BoardSession) -> None:
    s.hello()
    assert s.push_samples(FEATS, LABELS, clear=True) == 120
    res = s.train(TrainRequest(1, 16, 0.01, 0.9, 0.0, 0.0, 7, 1))
    assert res.num_examples == 120
    upd = s.read_update()
    assert upd.update_id == res.update_id and upd.weights.shape == (10, 64) and np.isfinite(upd.weights).all()
    s.ack_update(upd.update_id)
    s.ack_update(upd.update_id)  # idempotent
    with pytest.raises(DeviceError, match="NO_UPDATE"):
        s.read_update()
    new = default_head(seed=3)
    st = s.deploy_head(new, FEATS[:8])
    assert st.slots[st.confirmed].state == SlotState.CONFIRMED and st.active == st.confirmed
    assert s.get_head().equals(new)
    ev = s.evaluate()
    assert ev.n == 120 and 0 <= ev.accuracy <= 1


def test_in_process_round(tmp_path) -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY), str(tmp_path / "b.flash"))
    _round(BoardSession(InProcessTransport(board), key=KEY))
    again = VirtualBoard(BoardConfig(fleet_key=KEY), str(tmp_path / "b.flash"))  # power cycle from the file
    assert again.head.equals(default_head(seed=3))


def _serve(uri: str, tmp_path) -> tuple[str, threading.Event, threading.Thread]:
    stop, addr = threading.Event(), []
    ready = threading.Event()
    th = threading.Thread(
        target=serve_board,
        args=(uri, str(tmp_path / "s.flash"), 5, KEY),
        kwargs={"stop": stop, "ready": lambda a: (addr.append(a), ready.set())},
        daemon=True,
    )
    th.start()
    assert ready.wait(5)
    return addr[0], stop, th


def test_over_tcp_socket(tmp_path) -> None:
    addr, stop, th = _serve("socket://127.0.0.1:0", tmp_path)
    try:
        s = BoardSession(open_transport(addr), timeout=1.0, key=KEY)
        _round(s)
        assert s.info.device_id == 5
        s.close()
    finally:
        stop.set()
        th.join(5)


def test_over_pty(tmp_path) -> None:
    path, stop, th = _serve("pty", tmp_path)
    try:
        s = BoardSession(open_transport(f"serial://{path}"), timeout=1.0, key=KEY)
        _round(s)
        s.close()
    finally:
        stop.set()
        th.join(5)


def test_tampered_and_unsigned_images_refused() -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    patch = encode_head_patch(default_head(seed=4))
    with pytest.raises(DeviceError, match="AUTH_FAILED.*unsigned"):
        s.upload(patch, ImageKind.HEAD_PATCH, key=b"")
    with pytest.raises(DeviceError, match="AUTH_FAILED.*HMAC"):
        s.upload(patch, ImageKind.HEAD_PATCH, key=b"x" * 32)
    # signed image, bytes tampered in transit/flash: SHA-256 from flash does not match
    st = s.upload(patch, ImageKind.HEAD_PATCH)
    base = board.flash.slot_base(st.slot)
    board.flash.mem[base + 100] ^= 0xFF
    with pytest.raises(DeviceError, match="HASH_MISMATCH"):
        s.verify(st.slot)
    assert board.active == 0 and board.head.equals(default_head())


def test_failed_selftest_rolls_back() -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    new = default_head(seed=9)
    st = s.upload(encode_head_patch(new))
    s.verify(st.slot)
    s.activate(st.slot)
    wrong = head_forward_int8(new, FEATS[:4]).astype(np.int16) + 5
    with pytest.raises(DeviceError, match="SELFTEST_FAILED"):
        s.confirm(st.slot, FEATS[:4], np.clip(wrong, -128, 127))
    s.rollback()
    assert board.head.equals(default_head()) and s.status().active == 0


def test_unconfirmed_test_image_reverts_on_reset() -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    st = s.upload(encode_head_patch(default_head(seed=9)))
    s.verify(st.slot)
    s.activate(st.slot)
    s.reset()
    status = s.status()
    assert status.active == 0 and status.flags & 1 and status.slots[st.slot].state == SlotState.VERIFIED


def test_spoofed_update_rejected() -> None:
    board = VirtualBoard(BoardConfig(fleet_key=b"other-fleet-key!" * 2))
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    s.push_samples(FEATS, LABELS)
    s.train(TrainRequest(1, 16, 0.01, 0.0, 0.0, 0.0, 1, 1))
    with pytest.raises(UpdateRejected, match="HMAC"):
        s.read_update()


def test_unknown_type_answered_as_device_error() -> None:
    """A request of a type the host does not know (an UNKNOWN_TYPE probe) raises DeviceError naming the type,
    not a ValueError from the host's own error formatting."""
    s = BoardSession(InProcessTransport(VirtualBoard(BoardConfig(device_id=1, fleet_key=bytes(32)))), seed=1)
    s.hello()
    with pytest.raises(DeviceError, match=r"^type 0x30: UNKNOWN_TYPE: type 0x30"):
        s.request(0x30)
