"""Multi-frame objects of docs/protocol.md: HeadPatch (int8 head) and UpdateBlob (trained float head + HMAC)."""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass

import numpy as np

from fedtiny.errors import ModelError, ProtocolError
from fedtiny.ondevice import Int8Head

HEAD_MAGIC = b"FTHP"
UPDATE_MAGIC = b"FTUP"
_HP = struct.Struct("<4sBBHHbbff")  # 20 bytes
_UP = struct.Struct("<4sBBHHHIIIIf")  # 32 bytes
TAG_SIZE = 32


def head_patch_size(c: int, d: int) -> int:
    return _HP.size + 8 * c + c * d


def encode_head_patch(head: Int8Head) -> bytes:
    """HeadPatch bytes of an int8 head (size 20 + 8C + C·D)."""
    c, d = head.weights.shape
    return (
        _HP.pack(
            HEAD_MAGIC,
            1,
            0,
            c,
            d,
            head.input_zero_point,
            head.output_zero_point,
            head.input_scale,
            head.output_scale,
        )
        + head.weight_scales.astype("<f4").tobytes()
        + head.bias.astype("<i4").tobytes()
        + head.weights.astype(np.int8).tobytes()
    )


def decode_head_patch(p: bytes, shape: tuple[int, int] | None = None) -> Int8Head:
    """Parse and validate a HeadPatch; ProtocolError on bad layout/values, ModelError on a shape mismatch."""
    if len(p) < _HP.size:
        raise ProtocolError(f"head patch of {len(p)} bytes is shorter than its 20-byte header")
    magic, ver, _flags, c, d, izp, ozp, isc, osc = _HP.unpack_from(p)
    if magic != HEAD_MAGIC or ver != 1:
        raise ProtocolError(f"head patch: bad magic/version {magic!r}/{ver}")
    if len(p) != head_patch_size(c, d) or c == 0 or d == 0:
        raise ProtocolError(f"head patch {c}x{d} must be {head_patch_size(c, d)} bytes, got {len(p)}")
    if shape is not None and (c, d) != tuple(shape):
        raise ModelError(f"head patch is {c}x{d}, the model's head is {shape[0]}x{shape[1]}")
    scales = np.frombuffer(p, "<f4", c, 20).astype(np.float32)
    if not (
        math.isfinite(isc)
        and isc > 0
        and math.isfinite(osc)
        and osc > 0
        and np.isfinite(scales).all()
        and (scales > 0).all()
    ):
        raise ProtocolError("head patch: scales must be finite and > 0")
    bias = np.frombuffer(p, "<i4", c, 20 + 4 * c).astype(np.int32)
    w = np.frombuffer(p, np.int8, c * d, 20 + 8 * c).reshape(c, d).copy()
    return Int8Head(w, scales, bias, isc, izp, osc, ozp)


@dataclass
class UpdateBlob:
    """A trained head as a board reports it (protocol.md: UpdateBlob)."""

    device_id: int
    update_id: int
    round: int
    num_examples: int
    loss: float
    weights: np.ndarray  # float32 [C, D]
    bias: np.ndarray  # float32 [C]
    tag: bytes = bytes(TAG_SIZE)

    def body(self) -> bytes:
        c, d = self.weights.shape
        return (
            _UP.pack(
                UPDATE_MAGIC,
                1,
                0,
                c,
                d,
                0,
                self.device_id,
                self.update_id,
                self.round,
                self.num_examples,
                self.loss,
            )
            + np.asarray(self.weights, "<f4").tobytes()
            + np.asarray(self.bias, "<f4").tobytes()
        )

    def sign(self, key: bytes | None) -> UpdateBlob:
        self.tag = hmac.new(key, self.body(), hashlib.sha256).digest() if key else bytes(TAG_SIZE)
        return self

    def encode(self) -> bytes:
        return self.body() + self.tag

    def verify(self, key: bytes) -> bool:
        """True if the tag is the HMAC of the body under `key` (a zero tag never verifies)."""
        return self.tag != bytes(TAG_SIZE) and hmac.compare_digest(
            self.tag, hmac.new(key, self.body(), hashlib.sha256).digest()
        )

    @classmethod
    def decode(cls, p: bytes) -> UpdateBlob:
        if len(p) < _UP.size + TAG_SIZE:
            raise ProtocolError(f"update blob of {len(p)} bytes is too short")
        magic, ver, _, c, d, _, dev, uid, rnd, n, loss = _UP.unpack_from(p)
        if magic != UPDATE_MAGIC or ver != 1:
            raise ProtocolError(f"update blob: bad magic/version {magic!r}/{ver}")
        if len(p) != _UP.size + 4 * c * d + 4 * c + TAG_SIZE:
            raise ProtocolError(f"update blob {c}x{d} has wrong size {len(p)}")
        w = np.frombuffer(p, "<f4", c * d, _UP.size).reshape(c, d).astype(np.float32)
        b = np.frombuffer(p, "<f4", c, _UP.size + 4 * c * d).astype(np.float32)
        return cls(dev, uid, rnd, n, loss, w, b, bytes(p[-TAG_SIZE:]))
