"""Frame/message codec: round trips, protocol.md test vectors, fuzzing of decoders and of the board."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtiny.clients.board import BoardConfig, VirtualBoard
from fedtiny.errors import ProtocolError
from fedtiny.link import vectors
from fedtiny.link.blobs import UpdateBlob, decode_head_patch, encode_head_patch, head_patch_size
from fedtiny.link.frames import Frame, FrameReader, cobs_decode, cobs_encode, decode_frame, encode_frame
from fedtiny.link.messages import (
    Confirm,
    HelloInfo,
    MsgType,
    Samples,
    SlotInfo,
    SlotStatus,
    Status,
    TrainRequest,
    UploadBegin,
    UploadState,
)

DOC = "docs/protocol.md"


def test_crc_check_value() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926


@given(st.binary(max_size=1200))
def test_cobs_round_trip(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc and cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=600),
    st.integers(0, 3),
    st.integers(0, 255),
)
def test_frame_round_trip(t: int, seq: int, payload: bytes, flags: int, status: int) -> None:
    fr = Frame(t, seq, payload, flags, status)
    assert decode_frame(encode_frame(fr)) == fr
    assert FrameReader().feed(b"\x00" + encode_frame(fr) * 2) == [fr, fr]


def test_vectors_in_doc_are_current() -> None:
    doc = open(DOC, encoding="utf-8").read()
    assert vectors.replace_block(doc) == doc, "run: python -m fedtiny.link.vectors --write docs/protocol.md"
    for desc, fr in vectors.vectors():
        assert encode_frame(fr).hex() in doc, desc
        assert decode_frame(encode_frame(fr)) == fr


def test_message_round_trips() -> None:
    h = HelloInfo(1, 2, 4096, 7, 0x6B, 10, 64, 256, 3, 65536, 0, 4, 1, "b", "fw")
    assert HelloInfo.decode(h.encode()) == h
    t = TrainRequest(2, 8, 0.5, 0.25, 0.0, 0.125, 9, 4)
    assert TrainRequest.decode(t.encode()) == t
    u = UploadState(1, 2, 1, 0, 100, 50, 1234)
    assert UploadState.decode(u.encode()) == u
    b = UploadBegin.for_image(b"abc", 1, b"k" * 32)
    assert UploadBegin.decode(b.encode()) == b
    s = SlotStatus(0, 0, 1, [SlotInfo(4, 1, 740, 740, bytes(range(32))), SlotInfo(0, 0, 0, 0)])
    assert SlotStatus.decode(s.encode()) == s
    smp = Samples.decode(Samples(0, 1, np.array([3, 1]), np.arange(6, dtype=np.int8).reshape(2, 3)).encode())
    assert smp.labels.tolist() == [3, 1] and smp.data.tolist() == [[0, 1, 2], [3, 4, 5]]
    c = Confirm.decode(Confirm(1, 0, np.ones((2, 4), np.int8), -np.ones((2, 3), np.int8)).encode())
    assert c.inputs.shape == (2, 4) and c.expected.shape == (2, 3)


def test_head_patch_is_compact_and_exact() -> None:
    from fedtiny.clients.board import default_head

    h = default_head(10, 64)
    p = encode_head_patch(h)
    assert len(p) == head_patch_size(10, 64) == 740
    assert len(p) <= 1.2 * 640 + 64 + 8 * 10
    assert decode_head_patch(p).equals(h)
    with pytest.raises(ProtocolError):
        decode_head_patch(p[:-1])


def test_update_blob_hmac() -> None:
    u = UpdateBlob(3, 9, 1, 20, 0.5, np.ones((2, 3), np.float32), np.zeros(2, np.float32)).sign(b"k" * 32)
    v = UpdateBlob.decode(u.encode())
    assert v.verify(b"k" * 32) and not v.verify(b"x" * 32)
    raw = bytearray(u.encode())
    raw[12] ^= 1  # spoofed device id
    assert not UpdateBlob.decode(bytes(raw)).verify(b"k" * 32)


DECODERS = [
    HelloInfo.decode,
    TrainRequest.decode,
    UploadState.decode,
    UploadBegin.decode,
    SlotStatus.decode,
    Samples.decode,
    Confirm.decode,
    decode_head_patch,
    UpdateBlob.decode,
    decode_frame,
    cobs_decode,
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DECODERS), st.binary(max_size=300))
def test_decoders_raise_only_protocol_error(dec, data: bytes) -> None:
    try:
        dec(data)
    except ProtocolError:
        pass


_BOARD = VirtualBoard(BoardConfig(fleet_key=b"k" * 32, slot_size=8192))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(MsgType) + [0x7F]),
    st.integers(0, 0xFFFF),
    st.binary(max_size=120),
    st.integers(0, 2),
)
def test_board_survives_malformed_requests(t: int, seq: int, payload: bytes, version: int) -> None:
    """CRC-valid garbage gets an error reply or a valid one; never a crash or a slot state change."""
    if (
        t
        in (
            MsgType.RESET,
            MsgType.UPLOAD_BEGIN,
            MsgType.UPLOAD_CHUNK,
            MsgType.ACTIVATE,
            MsgType.CONFIRM,
            MsgType.ROLLBACK,
            MsgType.VERIFY,
            MsgType.SET_HEAD,
        )
        and version == 1
    ):
        version = 2  # valid state changes are tested elsewhere: only the version-error path here
    before = (_BOARD.meta.encode()[8:], _BOARD.head.weights.tobytes())
    out = _BOARD.feed(encode_frame(Frame(t, seq, payload, 0, 0, version)))
    resp = FrameReader().feed(out)
    assert len(resp) == 1 and resp[0].seq == seq and resp[0].type == t
    if version != 1:
        assert resp[0].status == Status.BAD_VERSION
    assert (_BOARD.meta.encode()[8:], _BOARD.head.weights.tobytes()) == before


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_board_drops_line_noise(noise: bytes) -> None:
    before = _BOARD.meta.encode()
    _BOARD.feed(noise + b"\x00")
    assert _BOARD.meta.encode() == before
