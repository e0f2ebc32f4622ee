"""Regression tests of the virtual board for the field defects of issue 10 (docs/protocol.md decisions):
hyper-parameter ranges and the work bound, corrupt full images, CONFIRM of the image under test, update ids
across resets, flash bit rot, anti-rollback, input quantization, and the protocol divergences."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
from board_helpers import served_board

from fedtiny.clients.board import BoardConfig, PowerCut, VirtualBoard, default_head
from fedtiny.clients.board.handlers import HANDLERS
from fedtiny.errors import DeviceError
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.frames import FLAG_RESPONSE, Frame, FrameReader, encode_frame
from fedtiny.link.messages import (
    SS_FELL_BACK,
    TRAIN_FIXED,
    UPLOAD_RESTART,
    Confirm,
    ImageKind,
    MsgType,
    SlotState,
    Status,
    TrainRequest,
    UploadBegin,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import head_forward_int8

KEY = bytes(range(32))
INF = float("inf")


def board(**kw) -> VirtualBoard:
    return VirtualBoard(BoardConfig(fleet_key=KEY, cache_capacity=200, **kw))


def session(b: VirtualBoard) -> BoardSession:
    s = BoardSession(InProcessTransport(b), key=KEY, seed=3)
    s.hello()
    return s


def call(b: VirtualBoard, typ: int, payload: bytes) -> tuple[int, bytes]:
    """One request through the board's handler table (status, payload)."""
    r = b.handle(Frame(typ, 1, payload))
    fr = next(iter(FrameReader(4096).feed(r)))
    return fr.status, fr.payload


def features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 64)).astype(np.int8), rng.integers(0, 10, n)


def golden(n: int = 4) -> np.ndarray:
    return np.random.default_rng(9).integers(-128, 128, (n, 64)).astype(np.int8)


# ---------------------------------------------------------------------------------- defects 1 and 3
@pytest.mark.parametrize(
    "req",
    [
        TrainRequest(1, 4, INF, 0, 0, 0, 1, 1, TRAIN_FIXED),  # crashed the emulator (OverflowError)
        TrainRequest(1, 4, INF, 0, 0, 0, 1, 1),
        TrainRequest(1, 4, 0.05, INF, 0, 0, 1, 1),
        TrainRequest(1, 4, 0.05, 0, INF, 0, 1, 1),
        TrainRequest(1, 4, 0.05, 0, 0, INF, 1, 1),
        TrainRequest(1, 4, float("nan"), 0, 0, 0, 1, 1),
        TrainRequest(1, 4, 0.05, 1.0, 0, 0, 1, 1),
        TrainRequest(1, 4, 100.5, 0, 0, 0, 1, 1),
        TrainRequest(1, 4, 0.05, 0, 101, 0, 1, 1),
        TrainRequest(1, 4, 0.05, 0, 0, 101, 1, 1),
        TrainRequest(1001, 4, 0.05, 0, 0, 0, 1, 1),
        TrainRequest(65535, 1, 0.05, 0, 0, 0, 1, 1),  # hung the emulator for 30 minutes
    ],
)
def test_train_out_of_range_is_malformed(req: TrainRequest) -> None:
    b = board()
    s = session(b)
    s.push_samples(*features(10), clear=True)
    with pytest.raises(DeviceError, match="MALFORMED"):
        s.train(req)
    assert b.pending is None


def test_train_work_bound_and_divergence() -> None:
    b = board()
    s = session(b)
    s.push_samples(*features(200), clear=True)
    with pytest.raises(DeviceError, match="MALFORMED: epochs x cached"):
        s.train(TrainRequest(328, 1, 0.05, 0, 0, 0, 1, 1))  # 65,600 > 65,536
    s.push_samples(*features(10), clear=True)
    with pytest.raises(DeviceError, match="MALFORMED: training diverged"):
        s.train(TrainRequest(20, 1, 100.0, 0.5, 100.0, 0, 1, 1))
    assert b.pending is None and b.update_counter == 0  # no update id used
    s.train(TrainRequest(1, 4, 100.0, 0, 0, 0, 1, 1, TRAIN_FIXED))  # the top of the range is fine


# --------------------------------------------------------------------------------------------- defect 2
def test_flatbuffer_check_never_raises_anything_but_valueerror(tiny_tflite: bytes) -> None:
    from fedtiny.clients.board.tflite_check import check_structure

    check_structure(tiny_tflite)
    rng = np.random.default_rng(0)
    for _ in range(400):
        bad = bytearray(tiny_tflite)
        for pos in rng.integers(0, len(bad), rng.integers(1, 4)):
            bad[pos] = int(rng.integers(0, 256))
        try:
            check_structure(bytes(bad))
        except ValueError:
            pass
    for n in (0, 7, 64, len(tiny_tflite) // 2):
        with pytest.raises(ValueError):
            check_structure(tiny_tflite[:n])


def test_trial_run_contains_a_crash(monkeypatch) -> None:
    import fedtiny.clients.board.tflite_check as tc

    monkeypatch.setattr(tc, "_TRIAL", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(ValueError, match="signal 11"):
        tc.trial_run(b"model")


def test_corrupt_full_image_is_refused_and_marked_bad(tiny_tflite: bytes, tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    b = VirtualBoard(BoardConfig(fleet_key=KEY), f, model=tiny_tflite)
    s = session(b)
    bad = bytearray(tiny_tflite)
    struct.pack_into("<I", bad, 0, len(bad) + 1000)  # the root table offset points outside the image
    st = s.upload(bytes(bad), ImageKind.TFLITE)
    with pytest.raises(DeviceError, match="MALFORMED: image does not parse"):
        s.verify(st.slot)
    slot = s.status().slots[st.slot]
    assert (slot.state, slot.received) == (SlotState.RECEIVING, 0)  # marked bad, survives a restart
    again = VirtualBoard(BoardConfig(fleet_key=KEY), f, model=tiny_tflite)
    assert again.meta.slots[st.slot].state == SlotState.RECEIVING
    with pytest.raises(DeviceError, match="BAD_STATE"):
        session(again).activate(st.slot)


# --------------------------------------------------------------------------------------------- defect 4
def test_confirm_tests_the_image_under_test() -> None:
    b = board()
    s = session(b)
    x_head = default_head().with_(bias=default_head().bias - 300)
    y_head = default_head().with_(bias=default_head().bias + 5000)
    st = s.upload(encode_head_patch(x_head))
    s.verify(st.slot)
    s.activate(st.slot)
    s.set_head(y_head)
    g = golden()
    with pytest.raises(DeviceError, match="SELFTEST_FAILED"):
        s.confirm(st.slot, g, head_forward_int8(y_head, g))
    assert s.status().slots[st.slot].state == SlotState.TESTING
    s.confirm(st.slot, g, head_forward_int8(x_head, g))
    assert s.get_head().equals(x_head)
    b.reboot()
    assert b.head.equals(x_head)


# --------------------------------------------------------------------------------------------- defect 5
def test_update_ids_never_repeat_across_resets_and_power_cuts(tmp_path) -> None:
    b = VirtualBoard(BoardConfig(fleet_key=KEY, cache_capacity=4), str(tmp_path / "b.flash"))
    x, y = features(1)
    push = HANDLERS[MsgType.PUSH_SAMPLES]
    req = TrainRequest(1, 1, 0.05, 0, 0, 0, 1, 1, TRAIN_FIXED).encode()
    seen: list[int] = []

    def one() -> None:
        from fedtiny.link.messages import Samples

        if not b.cache.count[0]:
            push(b, Samples(0, 0, y, x).encode())
        r = HANDLERS[MsgType.TRAIN](b, req)
        assert r.status == Status.OK, r.payload
        uid = struct.unpack_from("<I", r.payload)[0]
        assert HANDLERS[MsgType.UPDATE_ACK](b, struct.pack("<I", uid)).status == Status.OK
        seen.append(uid)

    for _ in range(4097):  # the reproduction: 4,097 updates in one boot, then a reset
        one()
    b.reboot()
    one()
    for i in range(3000):
        if i % 700 == 0:
            b.reboot()
        one()
    for _ in range(3):  # a power cut (torn write) at the reservation write of the first TRAIN after a boot
        b.reboot()
        b.flash.cut_at_write, b.flash.writes = 1, 0
        with pytest.raises(PowerCut):
            one()
        b.reboot()
        one()
    assert len(seen) == len(set(seen)) and seen == sorted(seen) and 0 not in seen


# --------------------------------------------------------------------------------------------- defect 6
def test_boot_rehashes_and_falls_back_verify_rehashes(tmp_path) -> None:
    b = VirtualBoard(BoardConfig(fleet_key=KEY), str(tmp_path / "b.flash"))
    s = session(b)
    new = default_head().with_(bias=default_head().bias - 77)
    st = s.deploy_head(new, golden())
    assert st.confirmed == 1
    b.flash.mem[b.flash.slot_base(1) + 100] ^= 1  # bit rot in the confirmed image
    b.reboot()
    assert b.head.equals(default_head())
    ss = s.status()
    assert (ss.active, ss.confirmed, ss.flags) == (0, 0, SS_FELL_BACK)
    assert (ss.slots[1].state, ss.slots[1].received) == (SlotState.RECEIVING, 0)
    assert s.status().flags == 0
    assert s.verify(0)  # VERIFY hashes flash
    b.flash.mem[b.flash.slot_base(0) + 30] ^= 0x10
    with pytest.raises(DeviceError, match="HASH_MISMATCH"):
        s.verify(0)
    b.reboot()  # nothing intact: the factory head runs, STATUS says no slot runs
    ss = s.status()
    assert (ss.active, ss.confirmed, ss.flags) == (0xFF, 0xFF, SS_FELL_BACK)
    assert s.hello().active_slot == 0xFF
    st = s.deploy_head(new, golden())  # and the board can be redeployed
    assert st.confirmed == 0 and s.get_head().equals(new)


# --------------------------------------------------------------------------------------------- defect 7
def test_downgrade_refused() -> None:
    b = board()
    s = session(b)
    a = default_head().with_(bias=default_head().bias + 1)
    bb = default_head().with_(bias=default_head().bias + 2)
    s.deploy_head(a, golden(), security_counter=1)
    s.deploy_head(bb, golden(), security_counter=2)
    with pytest.raises(DeviceError, match="DOWNGRADE"):
        s.deploy_head(a, golden(), security_counter=1)  # the older signed image again
    begin = UploadBegin.for_image(encode_head_patch(a), ImageKind.HEAD_PATCH, KEY, security_counter=1)
    begin.security_counter = 3  # the counter is covered by the tag
    with pytest.raises(DeviceError, match="AUTH_FAILED"):
        s.request(MsgType.UPLOAD_BEGIN, begin.encode())
    st = s.status()
    with pytest.raises(DeviceError, match="DOWNGRADE"):
        s.activate(1 - st.confirmed)  # the fallback slot holds counter 1
    b.reboot()
    assert b.meta.sec_floor == 2
    s.deploy_head(a, golden(), security_counter=2)  # equal counters are fine


# --------------------------------------------------------------------------------------------- defect 8
def test_head_input_quantization_checked_without_backbone() -> None:
    b = board()
    s = session(b)
    for other in (
        default_head().with_(input_scale=default_head().input_scale * 2),
        default_head().with_(input_zero_point=default_head().input_zero_point + 1),
    ):
        st = s.upload(encode_head_patch(other))
        with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
            s.verify(st.slot)
        with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
            s.set_head(other)


# --------------------------------------------------------------------------------------------- defect 9
def test_set_head_staging_and_total() -> None:
    b = board()
    patch = encode_head_patch(default_head().with_(bias=default_head().bias + 3))
    assert call(b, MsgType.SET_HEAD, struct.pack("<II", len(patch), 0) + patch[:400])[0] == Status.OK
    assert call(b, MsgType.VERIFY, b"\x01")[0] == Status.BAD_STATE  # unrelated: staging kept
    assert call(b, MsgType.SET_HEAD, struct.pack("<II", 10**7, 0) + patch[:10])[0] == Status.SHAPE_MISMATCH
    assert len(b.staged) == 400
    st, p = call(b, MsgType.SET_HEAD, struct.pack("<II", len(patch), 400) + patch[400:])
    assert st == Status.OK and p == struct.pack("<I", 0) and encode_head_patch(b.head) == patch


@pytest.mark.parametrize("n", [31, 33])
def test_fleet_key_is_exactly_32_bytes(n: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        VirtualBoard(BoardConfig(fleet_key=bytes(n)))


def test_confirm_zero_vectors_and_incomplete_verify() -> None:
    b = board()
    s = session(b)
    image = encode_head_patch(default_head().with_(bias=default_head().bias + 9))
    st = s.upload(image)
    s.verify(st.slot)
    s.activate(st.slot)
    empty = Confirm(st.slot, 0, np.zeros((0, 64), np.int8), np.zeros((0, 10), np.int8)).encode()
    assert call(b, MsgType.CONFIRM, empty)[0] == Status.MALFORMED
    s.rollback()
    other = encode_head_patch(default_head().with_(bias=default_head().bias + 10))
    s.request(MsgType.UPLOAD_BEGIN, UploadBegin.for_image(other, 1, KEY).encode())
    s.request(MsgType.UPLOAD_CHUNK, struct.pack("<I", 0) + other[:100])
    with pytest.raises(DeviceError, match="BAD_STATE"):
        s.verify(st.slot)
    assert s.upload_status().received == 100  # kept: the upload resumes


def test_refusals_and_chunks_do_not_replace_the_retry_cache() -> None:
    b = board()
    x, y = features(1)
    from fedtiny.link.messages import Samples

    push = Frame(MsgType.PUSH_SAMPLES, 40, Samples(0, 0, y, x).encode())
    b.feed(encode_frame(push))
    assert b.cache.count[0] == 1
    b.feed(encode_frame(Frame(MsgType.HELLO, 41, b"xyz")))  # MALFORMED
    b.feed(encode_frame(Frame(0x7E, 42)))  # UNKNOWN_TYPE
    b.feed(encode_frame(Frame(MsgType.STATUS, 43, version=3)))  # BAD_VERSION
    b.feed(encode_frame(push))  # the retry: answered from the cache
    assert b.cache.count[0] == 1
    image = encode_head_patch(default_head().with_(bias=default_head().bias + 4))
    begin = Frame(
        MsgType.UPLOAD_BEGIN, 50, UploadBegin.for_image(image, 1, KEY, flags=UPLOAD_RESTART).encode()
    )
    b.feed(encode_frame(begin))
    b.feed(encode_frame(Frame(MsgType.UPLOAD_CHUNK, 51, struct.pack("<I", 0) + image[:300])))
    b.feed(encode_frame(begin))  # a stale duplicate of the RESTART BEGIN
    assert b.meta.slots[1].received == 300


def test_idle_tcp_client_does_not_block_others(tmp_path) -> None:
    with served_board(tmp_path / "b.flash", 5, KEY) as uri:
        host, port = uri[len("socket://") :].rsplit(":", 1)
        idle = socket.create_connection((host, int(port)))
        idle.sendall(b"\x01\x02")  # a partial frame, then nothing
        s = BoardSession(open_transport(uri), key=KEY, timeout=1.0, seed=1)
        assert s.hello().device_id == 5
        s.close()
        idle.close()


def test_frame_response_flag_sanity() -> None:
    b = board()
    out = b.feed(encode_frame(Frame(MsgType.HELLO, 7, b"", FLAG_RESPONSE)))
    assert out == b""
