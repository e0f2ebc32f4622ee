"""docs/protocol.md's order of checks, driven the same way on the C host firmware and the virtual board.

Each request below fails (or passes) exactly one documented check, or two checks at once where the document says
which comes first; both boards must answer the documented status. Needs cc + make (skipped otherwise).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import test_firmware as tf

from fedtiny.clients.board.device import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.frames import HEADER, FrameReader, cobs_encode
from fedtiny.link.messages import MsgType, Status
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.ondevice import head_forward_int8

M = MsgType


def _ub(kind: int = 1, slot: int = 0xFF, flags: int = 0, total: int = 16) -> bytes:
    return struct.pack("<BBBBI", kind, slot, flags, 0, total) + bytes(64) + struct.pack("<I", 0)


def _samples(kind: int, flags: int, n: int, dim: int, label: int = 0, esize: int = 1) -> bytes:
    return (
        struct.pack("<BBHH", kind, flags, n, dim)
        + struct.pack(f"<{n}H", *[label] * n)
        + bytes(n * dim * esize)
    )


def _train(epochs: int = 1, flags: int = 0) -> bytes:
    return struct.pack("<HHffffIII", epochs, 1, 0.1, 0, 0, 0, 1, 1, flags)


# (what, type, payload, documented status name or "OK"), in order: some depend on the state the earlier ones leave
CASES: list[tuple[str, int, bytes, str]] = [
    ("HELLO ext 2", M.HELLO, b"\x02", "MALFORMED"),
    ("RESET mode 1", M.RESET, b"\x01", "MALFORMED"),
    ("RESET no mode", M.RESET, b"", "MALFORMED"),
    ("READ_UPDATE length before pending", M.READ_UPDATE, bytes(5), "MALFORMED"),
    ("READ_UPDATE nothing pending", M.READ_UPDATE, struct.pack("<IH", 0, 10), "NO_UPDATE"),
    ("GET_HEAD offset = total: empty page", M.GET_HEAD, struct.pack("<IH", 740, 10), "OK"),
    ("GET_HEAD offset > total", M.GET_HEAD, struct.pack("<IH", 741, 10), "MALFORMED"),
    ("TRAIN length before cache", M.TRAIN, bytes(30), "MALFORMED"),
    ("TRAIN empty cache before ranges", M.TRAIN, _train(epochs=0), "CACHE_EMPTY"),
    ("PUSH kind 3", M.PUSH_SAMPLES, _samples(3, 0, 1, 64), "MALFORMED"),
    ("PUSH raw kind without backbone before dim", M.PUSH_SAMPLES, _samples(1, 0, 1, 3), "UNSUPPORTED"),
    ("PUSH dim before label", M.PUSH_SAMPLES, _samples(0, 0, 1, 3, label=99), "SHAPE_MISMATCH"),
    ("PUSH dim checked with n = 0", M.PUSH_SAMPLES, _samples(0, 1, 0, 0), "SHAPE_MISMATCH"),
    ("PUSH label >= C", M.PUSH_SAMPLES, _samples(0, 0, 1, 64, label=10), "MALFORMED"),
    ("PUSH reserved flag bits ignored", M.PUSH_SAMPLES, _samples(0, 0xFE, 2, 64, label=1), "OK"),
    ("TRAIN ranges before flags", M.TRAIN, _train(epochs=0, flags=4), "MALFORMED"),
    ("TRAIN unknown flag bits", M.TRAIN, _train(flags=4), "UNSUPPORTED"),
    ("SET_HEAD total before offset", M.SET_HEAD, struct.pack("<II", 10, 5), "SHAPE_MISMATCH"),
    ("SET_HEAD bad magic", M.SET_HEAD, struct.pack("<II", 740, 0) + bytes(740), "MALFORMED"),
    ("UPLOAD_BEGIN length", M.UPLOAD_BEGIN, _ub()[:-1], "MALFORMED"),
    ("UPLOAD_BEGIN kind 0", M.UPLOAD_BEGIN, _ub(kind=0), "MALFORMED"),
    ("UPLOAD_BEGIN slot 7 before total_len", M.UPLOAD_BEGIN, _ub(slot=7, total=0), "BAD_STATE"),
    ("UPLOAD_BEGIN confirmed slot", M.UPLOAD_BEGIN, _ub(slot=0), "BAD_STATE"),
    ("UPLOAD_BEGIN total_len 0 before the tag", M.UPLOAD_BEGIN, _ub(total=0), "NO_SPACE"),
    ("UPLOAD_BEGIN unsigned", M.UPLOAD_BEGIN, _ub(flags=0x80), "AUTH_FAILED"),
    ("UPLOAD_BEGIN SIGNED without keys", M.UPLOAD_BEGIN, _ub(flags=2), "AUTH_FAILED"),
    ("UPLOAD_STATUS slot 2", M.UPLOAD_STATUS, b"\x02", "MALFORMED"),
    ("VERIFY slot 2", M.VERIFY, b"\x02", "MALFORMED"),
    ("VERIFY EMPTY slot", M.VERIFY, b"\x01", "BAD_STATE"),
    ("VERIFY CONFIRMED slot: re-hash only", M.VERIFY, b"\x00", "OK"),
    ("ACTIVATE slot 9", M.ACTIVATE, b"\x09", "MALFORMED"),
    ("ACTIVATE CONFIRMED slot", M.ACTIVATE, b"\x00", "BAD_STATE"),
    ("CONFIRM zero vectors before confirmed", M.CONFIRM, struct.pack("<BBHHH", 0, 0, 0, 64, 10), "MALFORMED"),
    ("CONFIRM slot 5", M.CONFIRM, struct.pack("<BBHHH", 5, 0, 1, 64, 10) + bytes(74), "MALFORMED"),
    ("CONFIRM confirmed slot", M.CONFIRM, struct.pack("<BBHHH", 0, 0, 1, 3, 3) + bytes(6), "OK"),
    ("CONFIRM not under test", M.CONFIRM, struct.pack("<BBHHH", 1, 0, 1, 64, 10) + bytes(74), "BAD_STATE"),
    ("KEY_CHANGE op before keys", M.KEY_CHANGE, b"FTKC\x03" + bytes(139), "MALFORMED"),
    ("KEY_CHANGE without keys", M.KEY_CHANGE, b"FTKC\x01" + bytes(139), "UNSUPPORTED"),
    ("KEYS with a payload", M.KEYS, b"\x00", "MALFORMED"),
]


def _status(s: BoardSession, mtype: int, payload: bytes) -> str:
    try:
        s.request(mtype, payload)
        return "OK"
    except DeviceError as e:
        return next(w for w in str(e).replace(":", " ").split() if w in Status.__members__)


def _raw(s: BoardSession, wire: bytes) -> list[tuple[int, int, int, int]]:
    """(version, type, status, seq) of the frames answered to raw wire bytes."""
    s.t.write(wire)
    rd, out = FrameReader(), list[tuple[int, int, int, int]]()
    end = time.monotonic() + 1.0  # long enough for an answer; an ignored frame gets none
    while not out and time.monotonic() < end:
        data = s.t.read(0.1)
        out += [(f.version, f.type, f.status, f.seq) for f in rd.feed(data)] if data else []
    return out


def _frame(version: int, mtype: int, flags: int, status: int, seq: int, payload: bytes = b"") -> bytes:
    import zlib

    body = HEADER.pack(version, mtype, flags, status, seq, len(payload)) + payload
    return cobs_encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


def test_check_order_alike_on_both_boards(tmp_path: Path) -> None:
    tf.make("build/host/fedtiny-fw")
    b = tf.HostBoard(tmp_path / "flash.bin", "--device-id", "5").start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=tf.KEY, cache_capacity=200))
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=tf.KEY, seed=1)
        sv.hello()
        for what, mtype, payload, want in CASES:
            got = [_status(s, mtype, payload) for s in (sc, sv)]
            assert got == [want, want], (what, got)
        # UPDATE_ACK: a repeated ACK is OK until a reset (the acknowledged id is in RAM), then NO_UPDATE; id 0 never
        for s in (sc, sv):
            uid = struct.unpack_from("<I", s.request(M.TRAIN, _train()))[0]
            got = [_status(s, M.UPDATE_ACK, struct.pack("<I", i)) for i in (uid, uid, 0)]
            s.request(M.RESET, b"\x00")
            time.sleep(0.5)
            s.hello()
            got.append(_status(s, M.UPDATE_ACK, struct.pack("<I", uid)))
            assert got == ["OK", "OK", "NO_UPDATE", "NO_UPDATE"], got
        # a switch from a head to a head (ACTIVATE, ROLLBACK of a head patch) keeps the cache and SET_HEAD staging
        patch = encode_head_patch(default_head())
        for s in (sc, sv):
            s.request(M.PUSH_SAMPLES, _samples(0, 1, 2, 64, label=1))
            s.request(M.SET_HEAD, struct.pack("<II", len(patch), 0) + patch[:100])
            st = s.upload(patch)
            s.verify(st.slot)
            s.activate(st.slot)
            s.rollback()
            assert s.hello().cache_count == 2
            assert s.request(M.SET_HEAD, struct.pack("<II", len(patch), 100) + patch[100:]) == bytes(4)
        # a failed CONFIRM names the first largest difference alike, and leaves the image under test's head running
        head = default_head()
        xh, yh = head.with_(bias=head.bias - 300), head.with_(bias=head.bias + 5000)
        g = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)
        reasons = []
        for s in (sc, sv):
            st = s.upload(encode_head_patch(xh))
            s.verify(st.slot)
            s.activate(st.slot)
            s.set_head(yh)
            with pytest.raises(DeviceError, match="SELFTEST_FAILED") as e:
                s.confirm(st.slot, g, head_forward_int8(xh, g) // 2)
            reasons.append(str(e.value))
            assert encode_head_patch(s.get_head()) == encode_head_patch(xh)
            s.rollback()
        assert reasons[0] == reasons[1] and "vector 0 channel" in reasons[0], reasons
        # header: version first (an unknown type in a version-2 frame is BAD_VERSION), then the type; a request's
        # status byte and flag bits 1..7 are ignored; a frame with RESPONSE set is ignored
        frames: list[tuple[bytes, list[tuple[int, int, int, int]]]] = [
            (_frame(2, 0x77, 0, 0, 11), [(1, 0x77, Status.BAD_VERSION, 11)]),
            (_frame(1, 0x30, 0, 0, 12), [(1, 0x30, Status.UNKNOWN_TYPE, 12)]),
            (_frame(1, M.STATUS, 0xFC, 9, 13), [(1, M.STATUS, 0, 13)]),
            (_frame(1, M.STATUS, 0x01, 0, 14), []),
            (_frame(1, M.STATUS, 0, 0, 15, bytes(4097)), []),  # payload > max_payload, short COBS: dropped
            (_frame(1, M.STATUS, 0, 0, 16, bytes(4096)), [(1, M.STATUS, Status.MALFORMED, 16)]),
        ]
        for wire, answer in frames:
            assert [_raw(s, wire) for s in (sc, sv)] == [answer, answer]
    finally:
        b.stop()


def _with_unknown_opcode(tflite: bytes) -> bytes:
    """``tflite`` with its first operator code rewritten to builtin 9999 (no such op): well formed, not runnable."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    out = bytearray(tflite)
    code = schema.Model.GetRootAs(out, 0).OperatorCodes(0)
    at = code._tab.Offset(10)  # OperatorCode field 3: builtin_code (int32)
    assert at, "the converter writes builtin_code"
    struct.pack_into("<i", out, code._tab.Pos + at, 9999)
    return bytes(out)


def test_a_full_image_with_an_op_no_board_runs_is_unsupported_on_both(
    tmp_path: Path, tiny_tflite: bytes
) -> None:
    """VERIFY of a well-formed full image that needs an unknown op: UNSUPPORTED on both boards, slot marked bad."""
    image = _with_unknown_opcode(tiny_tflite)
    tf.make("build/host/fedtiny-fw")
    b = tf.HostBoard(tmp_path / "flash.bin", "--device-id", "5").start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=tf.KEY))
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=tf.KEY, seed=1)
        sv.hello()
        for s in (sc, sv):
            st = s.upload(image, kind=2)
            with pytest.raises(DeviceError, match="UNSUPPORTED") as e:
                s.verify(st.slot)
            assert "9999" in str(e.value) or "not supported" in str(e.value), str(e.value)
            assert s.upload_status(st.slot).received == 0  # refused: the slot is erased, nothing resumes
    finally:
        b.stop()
