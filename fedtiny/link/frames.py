"""Frame codec of docs/protocol.md: COBS framing with a 0x00 delimiter, 8-byte header, CRC-32 trailer.

Decoded frame = header (8 B) | payload | CRC-32 (4 B, little-endian, zlib.crc32 over header+payload).
On the wire: COBS(decoded frame) followed by one 0x00 byte.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from fedtiny.errors import ProtocolError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBBBHH")  # version, type, flags, status, seq, payload length
HEADER_SIZE = HEADER.size  # 8
CRC_SIZE = 4
DEFAULT_MAX_PAYLOAD = 4096
MIN_MAX_PAYLOAD = 256

FLAG_RESPONSE = 0x01
FLAG_RETRY = 0x02
KNOWN_FLAGS = FLAG_RESPONSE | FLAG_RETRY


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing (Cheshire & Baker); output contains no 0x00."""
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode; raises ProtocolError on a 0x00 byte or a code that overruns the input."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("COBS: zero byte inside a frame")
        end = i + code
        if end > n:
            raise ProtocolError(f"COBS: code {code} at {i} overruns frame of {n} bytes")
        block = data[i + 1 : end]
        if 0 in block:
            raise ProtocolError("COBS: zero byte inside a frame")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def cobs_max_encoded(n: int) -> int:
    """Worst-case COBS size of n bytes (without the delimiter)."""
    return n + n // 254 + 1


@dataclass(frozen=True)
class Frame:
    """One decoded frame. `status` is 0 in requests; in responses it is a Status code."""

    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    status: int = 0
    version: int = PROTOCOL_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)


def pack_frame(frame: Frame) -> bytes:
    """Header+payload+CRC (the decoded frame, before COBS)."""
    if not 0 <= frame.seq <= 0xFFFF:
        raise ProtocolError(f"seq {frame.seq} out of range 0..65535")
    if len(frame.payload) > 0xFFFF:
        raise ProtocolError(f"payload of {len(frame.payload)} bytes exceeds 65535")
    body = HEADER.pack(frame.version, frame.type, frame.flags, frame.status, frame.seq, len(frame.payload))
    body += frame.payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_frame(raw: bytes, max_payload: int = 0xFFFF) -> Frame:
    """Parse a decoded frame; checks length, CRC, payload length. Version is left to the caller."""
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise ProtocolError(f"frame of {len(raw)} bytes is shorter than header+CRC (12)")
    body, (crc,) = raw[:-CRC_SIZE], struct.unpack("<I", raw[-CRC_SIZE:])
    if zlib.crc32(body) != crc:
        raise ProtocolError(f"CRC mismatch: got {crc:08x}, computed {zlib.crc32(body):08x}")
    version, mtype, flags, status, seq, length = HEADER.unpack_from(body)
    if length != len(body) - HEADER_SIZE:
        raise ProtocolError(f"header says {length} payload bytes, frame has {len(body) - HEADER_SIZE}")
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds max {max_payload}")
    return Frame(mtype, seq, bytes(body[HEADER_SIZE:]), flags, status, version)


def encode_frame(frame: Frame) -> bytes:
    """Bytes on the wire: COBS(decoded frame) + 0x00."""
    return cobs_encode(pack_frame(frame)) + b"\x00"


def decode_frame(wire: bytes, max_payload: int = 0xFFFF) -> Frame:
    """Decode one wire frame (with or without its trailing 0x00)."""
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    return unpack_frame(cobs_decode(wire), max_payload)


class FrameReader:
    """Incremental deframer: feed bytes, get decoded frames; bad frames are counted and dropped.

    Empty frames (two 0x00 in a row) are ignored; a frame longer than the limit is discarded up to
    the next 0x00.
    """

    def __init__(self, max_payload: int = 0xFFFF) -> None:
        self.max_payload = max_payload
        self.max_encoded = cobs_max_encoded(HEADER_SIZE + max_payload + CRC_SIZE)
        self._buf = bytearray()
        self._overflow = False
        self.dropped = 0
        self.last_error = ""

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while True:
            idx = data.find(b"\x00", start)
            if idx < 0:
                self._append(data[start:])
                return frames
            self._append(data[start:idx])
            chunk, overflow = bytes(self._buf), self._overflow
            self._buf.clear()
            self._overflow = False
            start = idx + 1
            if overflow:
                self._drop("frame too long")
            elif chunk:
                try:
                    frames.append(unpack_frame(cobs_decode(chunk), self.max_payload))
                except ProtocolError as e:
                    self._drop(str(e))

    def _append(self, data: bytes) -> None:
        if self._overflow:
            return
        self._buf += data
        if len(self._buf) > self.max_encoded:
            self._buf.clear()
            self._overflow = True

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self.last_error = why
