"""Message layer of docs/protocol.md: type/status codes and payload dataclasses with encode/decode.

Every `decode` raises ProtocolError on a payload that does not have the exact layout.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import numpy as np

from fedtiny.errors import ProtocolError


class MsgType(IntEnum):
    HELLO = 0x01
    STATUS = 0x02
    RESET = 0x03
    GET_HEAD = 0x10
    SET_HEAD = 0x11
    PUSH_SAMPLES = 0x12
    TRAIN = 0x13
    READ_UPDATE = 0x14
    UPDATE_ACK = 0x15
    EVALUATE = 0x16
    LABEL = 0x17  # label (or un-label) cached samples by sample id: late labels (docs/labels.md)
    INFER = 0x18  # run one input through the running head / model, answer its logits and output
    STAGE_INPUT = (
        0x19  # one raw input larger than a frame, staged in pieces (PUSH_SAMPLES / INFER kinds 3, 4)
    )
    UPLOAD_BEGIN = 0x20
    UPLOAD_CHUNK = 0x21
    UPLOAD_STATUS = 0x22
    VERIFY = 0x23
    ACTIVATE = 0x24
    CONFIRM = 0x25
    ROLLBACK = 0x26
    KEYS = 0x27  # the board's trusted public keys (section 7)
    KEY_CHANGE = 0x28  # add or retire one trusted public key, signed by a trusted key (section 7)


class Status(IntEnum):
    OK = 0
    UNKNOWN_TYPE = 1
    BAD_VERSION = 2
    MALFORMED = 3
    BAD_STATE = 4
    BAD_OFFSET = 5
    HASH_MISMATCH = 6
    AUTH_FAILED = 7
    NO_SPACE = 8
    NO_UPDATE = 9
    UPDATE_PENDING = 10
    SELFTEST_FAILED = 11
    SHAPE_MISMATCH = 12
    FLASH_ERROR = 13
    BUSY = 14
    UNSUPPORTED = 15
    CACHE_EMPTY = 16
    DOWNGRADE = 17  # image security counter below the board's anti-rollback floor
    INTERNAL = 255


class SlotState(IntEnum):
    EMPTY = 0
    RECEIVING = 1
    VERIFIED = 2
    TESTING = 3
    CONFIRMED = 4


class ImageKind(IntEnum):
    HEAD_PATCH = 1
    TFLITE = 2


class Cap(IntEnum):
    TRAIN = 1 << 0
    EVALUATE = 1 << 1
    RAW_SAMPLES = 1 << 2
    HEAD_PATCH = 1 << 3
    FULL_IMAGE = 1 << 4
    FLEET_KEY = 1 << 5
    SET_HEAD = 1 << 6
    FLOAT_TRAIN = 1 << 7  # TRAIN in float32 (docs/ondevice.md section 3)
    FIXED_TRAIN = 1 << 8  # TRAIN with flag FIXED: integer SGD (docs/ondevice.md section 3b)
    SIGNED_IMAGES = 1 << 9  # the board holds Ed25519 public keys and accepts only signed images (section 7)
    DEVICE_KEY = 1 << 10  # UpdateBlob tags are under this board's own update key (section 7)
    LABELS = 1 << 11  # unlabelled samples (label UNLABELLED), LABEL, and TRAIN flag PSEUDO (pseudo-labels)
    INFER = 1 << 12  # INFER: one input through the running head / model, its int8 logits and output back
    STAGED_INPUT = 1 << 13  # STAGE_INPUT, and sample / input kinds 3 and 4 (the staged raw input)


class SampleKind(IntEnum):
    FEATURES = 0  # int8 features, dim D
    RAW_INT8 = 1  # int8 model inputs (already quantized), dim raw_input_len
    RAW_F32 = 2  # float32 raw inputs, quantized by the board with the model's input scale/zero point
    STAGED_INT8 = 3  # the staged raw input (STAGE_INPUT) as int8, dim raw_input_len; no sample bytes, n <= 1
    STAGED_F32 = (
        4  # the staged raw input as float32 (4 * raw_input_len bytes staged); no sample bytes, n <= 1
    )


STAGED_KINDS = (SampleKind.STAGED_INT8, SampleKind.STAGED_F32)  # no sample bytes: the staged raw input


class InferOutput(IntEnum):
    """InferResult.out_type: the element type of the model output in an INFER answer."""

    NONE = 0  # no model output (a board without a backbone): out_len is 0
    INT8 = 1  # int8, out_len bytes
    FLOAT32 = 2  # float32 little-endian (a model that ends in DEQUANTIZE), 4 * out_len bytes


ANY_SLOT = 0xFF
NO_SLOT = 0xFF
UPLOAD_RESTART = 0x01
UPLOAD_SIGNED = 0x02  # UploadBegin.flags bit 1: the image is an Ed25519-signed MCUboot image (section 7)
SAMPLES_CLEAR = 0x01
HELLO_EXT = 0x01  # HELLO request payload: answer with the HelloInfo extension (arena_bytes)
TRAIN_FIXED = 0x01  # TrainRequest.flags bit 0: fixed-point arithmetic (docs/ondevice.md section 3b)
TRAIN_PSEUDO = 0x02  # TrainRequest.flags bit 1: pseudo-label unlabelled slots (docs/ondevice.md section 5a)
UNLABELLED = 0xFFFF  # the label of a sample pushed without one (PUSH_SAMPLES, LABEL)
SS_REVERTED = 0x01  # SlotStatus.flags: the last boot reverted an unconfirmed test image
SS_FELL_BACK = (
    0x02  # SlotStatus.flags: the last boot found the confirmed image corrupt and ran the other slot
)

# TrainRequest ranges (docs/protocol.md "TrainRequest"): outside them TRAIN answers MALFORMED
TRAIN_MAX_EPOCHS = 1000
TRAIN_MAX_LR = 100.0
TRAIN_MAX_DECAY = 100.0  # weight_decay and prox_mu
TRAIN_MAX_WORK = 65536  # epochs x cached samples: per-sample gradient steps of one TRAIN
UPDATE_ID_BLOCK = 4096  # update ids reserved (persisted) per flash write
REASON_MAX = 200  # bytes of the UTF-8 reason a non-OK response may carry (section 2)

# Fixed parts of the layouts of section 4. The decoders below use them, and the C firmware's
# firmware/core/ft_proto.h is generated from them (scripts/gen_proto.py): one definition for both.
BLOB_READ = struct.Struct("<IH")  # BlobRead: offset, max_len
SET_HEAD_HEADER = struct.Struct("<II")  # SET_HEAD: total, offset (then the data)
STAGE_INPUT_HEADER = struct.Struct("<II")  # STAGE_INPUT: total, offset (then the data); answer u32 staged
UPLOAD_CHUNK_HEADER = struct.Struct("<I")  # UPLOAD_CHUNK: offset (then the data)
SAMPLES_HEADER = struct.Struct("<BBHH")  # Samples: kind, flags, n, dim (then labels and samples)
PUSH_RESULT = struct.Struct("<II")  # PUSH_SAMPLES response: cached, pushed_total
CONFIRM_HEADER = struct.Struct("<BBHHH")  # Confirm: slot, tolerance, n, in_len, out_len (then the vectors)
VERIFY_RESULT = struct.Struct("<BB32s")  # VERIFY response: slot, state, sha256
SLOT_STATUS_HEADER = struct.Struct("<BBBB")  # SlotStatus: n_slots, active, confirmed, flags
INFER_HEADER = struct.Struct("<BBH")  # InferRequest: kind, reserved, dim (then the input)
INFER_RESULT_HEADER = struct.Struct("<HBBH")  # InferResult: n_logits, out_type, reserved, out_len (then data)
SLOT_INFO = struct.Struct("<BBHII32s")  # SlotStatus, per slot: state, kind, reserved, total, received, sha


def _need(payload: bytes, n: int, what: str, exact: bool = True) -> None:
    if (len(payload) != n) if exact else (len(payload) < n):
        raise ProtocolError(f"{what}: payload of {len(payload)} bytes, expected {'' if exact else '>= '}{n}")


_F = TypeVar("_F", bound="FixedLayout")


class FixedLayout:
    """Base of the dataclasses whose payload is exactly one struct over their fields, in order: a subclass
    names its layout with ``class X(FixedLayout, fmt="<IIf")``."""

    _ST: ClassVar[struct.Struct]
    SIZE: ClassVar[int]
    _FIELDS: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, fmt: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if fmt:
            cls._ST = struct.Struct(fmt)
            cls.SIZE = cls._ST.size
            cls._FIELDS = tuple(cls.__dict__.get("__annotations__", {}))  # the fields, in declaration order

    def encode(self) -> bytes:
        return self._ST.pack(*(getattr(self, name) for name in self._FIELDS))

    @classmethod
    def decode(cls: type[_F], payload: bytes) -> _F:
        _need(payload, cls._ST.size, cls.__name__)
        return cls._from_values(cls._ST.unpack(payload))

    @classmethod
    def _from_values(cls: type[_F], values: tuple[Any, ...]) -> _F:
        obj = object.__new__(cls)  # a dataclass: its fields in order, exactly as __init__ would set them
        for name, value in zip(cls._FIELDS, values):
            setattr(obj, name, value)
        return obj


@dataclass
class HelloInfo:
    """HELLO response. `arena_bytes` is in the extension a board appends when the request asks for it (payload
    `u8 HELLO_EXT`): the activation arena its running model needs, 0 without a model; None when not reported."""

    proto_version: int
    n_slots: int
    max_payload: int
    device_id: int
    capabilities: int
    C: int
    D: int
    cache_capacity: int
    cache_count: int
    max_image: int
    raw_input_len: int
    rx_window: int
    active_slot: int
    board_name: str
    fw_version: str
    arena_bytes: int | None = None

    _ST = struct.Struct("<BBHIIHHIIIHBB")
    EXT_ST: ClassVar[struct.Struct] = struct.Struct("<I")  # the extension: arena_bytes

    def encode(self) -> bytes:
        vals = [getattr(self, f) for f in list(self.__dataclass_fields__)[:13]]
        name, fw = self.board_name.encode()[:255], self.fw_version.encode()[:255]
        out = self._ST.pack(*vals) + bytes([len(name)]) + name + bytes([len(fw)]) + fw
        return out if self.arena_bytes is None else out + self.EXT_ST.pack(self.arena_bytes)

    @classmethod
    def decode(cls, p: bytes) -> HelloInfo:
        """Without the extension (the answer to an empty HELLO) or with it; bytes after the extension fields this
        host knows are ignored (later extensions append)."""
        n0 = cls._ST.size
        _need(p, n0 + 2, "HelloInfo", exact=False)
        (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12) = cls._ST.unpack_from(p)
        n = p[n0]
        _need(p, n0 + 2 + n, "HelloInfo", exact=False)
        m = p[n0 + 1 + n]
        end = n0 + 2 + n + m
        _need(p, end, "HelloInfo", exact=False)
        arena = None
        if len(p) > end:
            _need(p, end + cls.EXT_ST.size, "HelloInfo with extension", exact=False)
            (arena,) = cls.EXT_ST.unpack_from(p, end)
        try:
            name = p[n0 + 1 : n0 + 1 + n].decode()
            fw = p[n0 + 2 + n : end].decode()
        except UnicodeDecodeError as e:
            raise ProtocolError(f"HelloInfo: bad UTF-8: {e}") from None
        return cls(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, name, fw, arena)


@dataclass
class BlobRead:
    offset: int
    max_len: int

    def encode(self) -> bytes:
        return BLOB_READ.pack(self.offset, self.max_len)

    @classmethod
    def decode(cls, p: bytes) -> BlobRead:
        _need(p, BLOB_READ.size, "BlobRead")
        return cls(*BLOB_READ.unpack(p))


@dataclass
class TrainRequest:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    prox_mu: float
    seed: int
    round: int
    flags: int = 0  # bit 0 TRAIN_FIXED, bit 1 TRAIN_PSEUDO; other bits reserved (0)
    pseudo_margin: float = 0.0  # with TRAIN_PSEUDO: the margin threshold (docs/ondevice.md section 5a)
    pseudo_weight: float = 1.0  # with TRAIN_PSEUDO: the gradient weight of a pseudo-labelled sample

    _ST = struct.Struct("<HHffffIII")
    _PSEUDO = struct.Struct("<ff")
    SIZE = _ST.size
    LEGACY_SIZE = SIZE - 4  # before the flags field: read as flags = 0
    PSEUDO_SIZE = SIZE + _PSEUDO.size  # with TRAIN_PSEUDO (and only then)

    def encode(self) -> bytes:
        head = self._ST.pack(
            self.epochs,
            self.batch_size,
            self.lr,
            self.momentum,
            self.weight_decay,
            self.prox_mu,
            self.seed,
            self.round,
            self.flags,
        )
        if self.pseudo:
            head += self._PSEUDO.pack(self.pseudo_margin, self.pseudo_weight)
        return head

    @classmethod
    def decode(cls, payload: bytes) -> TrainRequest:
        if len(payload) == cls.LEGACY_SIZE:
            payload = bytes(payload) + bytes(4)
        if len(payload) == cls.PSEUDO_SIZE:
            req = cls(*cls._ST.unpack_from(payload))
            req.pseudo_margin, req.pseudo_weight = cls._PSEUDO.unpack_from(payload, cls.SIZE)
            if not req.pseudo:
                raise ProtocolError(f"TrainRequest of {cls.PSEUDO_SIZE} bytes without flag PSEUDO")
            return req
        _need(payload, cls.SIZE, "TrainRequest")
        req = cls(*cls._ST.unpack(payload))
        if req.pseudo:
            raise ProtocolError(f"TrainRequest with flag PSEUDO must be {cls.PSEUDO_SIZE} bytes")
        return req

    @property
    def fixed(self) -> bool:
        return bool(self.flags & TRAIN_FIXED)

    @property
    def pseudo(self) -> bool:
        return bool(self.flags & TRAIN_PSEUDO)


@dataclass
class TrainResult(FixedLayout, fmt="<IIf"):
    update_id: int
    num_examples: int
    loss: float


@dataclass
class EvalResult(FixedLayout, fmt="<Iff"):
    n: int
    accuracy: float
    loss: float


@dataclass
class UploadState(FixedLayout, fmt="<BBBBIII"):
    slot: int
    state: int
    resumed: int
    reserved: int
    total_len: int
    received: int
    prefix_crc32: int


def image_tag(key: bytes, kind: int, total_len: int, sha256: bytes, security_counter: int = 0) -> bytes:
    """HMAC-SHA256 tag of an image (protocol.md section 7): covers kind, length, hash and security counter."""
    msg = b"FTIMG2" + struct.pack("<BI", kind, total_len) + sha256 + struct.pack("<I", security_counter)
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass
class UploadBegin:
    kind: int
    slot: int
    flags: int
    total_len: int
    sha256: bytes
    tag: bytes
    security_counter: int = 0  # anti-rollback: never below the board's floor (section 5)

    SIZE = 76

    def encode(self) -> bytes:
        return (
            struct.pack("<BBBBI", self.kind, self.slot, self.flags, 0, self.total_len)
            + self.sha256
            + self.tag
            + struct.pack("<I", self.security_counter)
        )

    @classmethod
    def decode(cls, p: bytes) -> UploadBegin:
        _need(p, cls.SIZE, "UploadBegin")
        kind, slot, flags, _, total = struct.unpack_from("<BBBBI", p)
        (counter,) = struct.unpack_from("<I", p, 72)
        return cls(kind, slot, flags, total, bytes(p[8:40]), bytes(p[40:72]), counter)

    @classmethod
    def for_image(
        cls,
        image: bytes,
        kind: int,
        key: bytes | None,
        slot: int = ANY_SLOT,
        flags: int = 0,
        security_counter: int = 0,
    ) -> UploadBegin:
        """An HMAC-tagged image (fleet key), or for an MCUboot-signed image (`fedtiny.link.signing`) flag SIGNED, a
        zero tag and the security counter of its signed TLV (`key` and `security_counter` are not used)."""
        sha = hashlib.sha256(image).digest()
        from fedtiny.link.signing import is_signed_image, parse_image

        if is_signed_image(image):
            counter = parse_image(image).security_counter
            return cls(kind, slot, flags | UPLOAD_SIGNED, len(image), sha, bytes(32), counter)
        tag = image_tag(key, kind, len(image), sha, security_counter) if key else bytes(32)
        return cls(kind, slot, flags, len(image), sha, tag, security_counter)


@dataclass
class Samples:
    kind: int
    flags: int
    labels: np.ndarray  # u16 [n]
    data: np.ndarray  # [n, dim]: int8 (kinds 0, 1) or float32 (kind 2)

    staged_dim: int = 0  # kinds 3 and 4 (the staged input): dim; ``data`` is then [n, 0] (no sample bytes)

    @staticmethod
    def dtype(kind: int) -> np.dtype:
        return np.dtype("<f4") if kind in (SampleKind.RAW_F32, SampleKind.STAGED_F32) else np.dtype(np.int8)

    @staticmethod
    def wire_size(kind: int) -> int:
        """Bytes of one element of a sample in the request: 4 (kind 2), 0 (kinds 3, 4: staged), else 1."""
        return 0 if kind in STAGED_KINDS else 4 if kind == SampleKind.RAW_F32 else 1

    @property
    def dim(self) -> int:
        return self.staged_dim if self.kind in STAGED_KINDS else int(self.data.shape[1])

    def encode(self) -> bytes:
        n = len(self.labels)
        body = (
            b""
            if self.kind in STAGED_KINDS
            else np.asarray(self.data).astype(self.dtype(self.kind)).tobytes()
        )
        return (
            SAMPLES_HEADER.pack(self.kind, self.flags, n, self.dim)
            + self.labels.astype("<u2").tobytes()
            + body
        )

    @classmethod
    def decode(cls, p: bytes) -> Samples:
        h = SAMPLES_HEADER.size
        _need(p, h, "Samples", exact=False)
        kind, flags, n, dim = SAMPLES_HEADER.unpack_from(p)
        dt = cls.dtype(kind)
        _need(p, h + 2 * n + n * dim * cls.wire_size(kind), "Samples")
        labels = np.frombuffer(p, "<u2", n, h).astype(np.int64)
        if kind in STAGED_KINDS:
            return cls(kind, flags, labels, np.zeros((n, 0), dt), dim)
        data = np.frombuffer(p, dt, n * dim, h + 2 * n).reshape(n, dim)
        return cls(kind, flags, labels, data.astype(np.float32) if kind == SampleKind.RAW_F32 else data)


@dataclass
class InferRequest:
    """INFER request: one input of ``kind`` (SampleKind: 0 int8 features of length D, 1 int8 model input, 2 float32
    raw input, both of length raw_input_len), ``data`` [dim] int8 (kinds 0, 1) or float32 (kind 2)."""

    kind: int
    data: np.ndarray
    staged_dim: int = 0  # kinds 3 and 4 (the staged input): dim; ``data`` is then empty (no input bytes)

    @property
    def dim(self) -> int:
        return self.staged_dim if self.kind in STAGED_KINDS else int(np.asarray(self.data).size)

    def encode(self) -> bytes:
        x = np.asarray(self.data).reshape(-1)
        body = b"" if self.kind in STAGED_KINDS else x.astype(Samples.dtype(self.kind)).tobytes()
        return INFER_HEADER.pack(self.kind, 0, self.dim) + body

    @classmethod
    def decode(cls, p: bytes) -> InferRequest:
        h = INFER_HEADER.size
        _need(p, h, "InferRequest", exact=False)
        kind, _, dim = INFER_HEADER.unpack_from(p)
        dt = Samples.dtype(kind)
        _need(p, h + dim * Samples.wire_size(kind), "InferRequest")
        if kind in STAGED_KINDS:
            return cls(kind, np.zeros(0, dt), dim)
        data = np.frombuffer(p, dt, dim, h)
        return cls(kind, data.astype(np.float32) if kind == SampleKind.RAW_F32 else data.copy())


@dataclass
class InferResult:
    """INFER response: the running head's int8 ``logits`` [C] and the model's ``output`` (int8, or float32 for
    ``out_type`` FLOAT32; empty for NONE)."""

    logits: np.ndarray
    out_type: int
    output: np.ndarray

    def encode(self) -> bytes:
        dt = np.dtype("<f4") if self.out_type == InferOutput.FLOAT32 else np.dtype(np.int8)
        out = np.asarray(self.output).reshape(-1)
        logits = np.asarray(self.logits).reshape(-1)
        return (
            INFER_RESULT_HEADER.pack(len(logits), self.out_type, 0, len(out))
            + logits.astype(np.int8).tobytes()
            + out.astype(dt).tobytes()
        )

    @classmethod
    def decode(cls, p: bytes) -> InferResult:
        h = INFER_RESULT_HEADER.size
        _need(p, h, "InferResult", exact=False)
        c, out_type, _, out_len = INFER_RESULT_HEADER.unpack_from(p)
        if out_type not in (InferOutput.NONE, InferOutput.INT8, InferOutput.FLOAT32):
            raise ProtocolError(f"InferResult: out_type {out_type}")
        if out_type == InferOutput.NONE and out_len:
            raise ProtocolError(f"InferResult: out_type NONE with out_len {out_len}")
        dt = np.dtype("<f4") if out_type == InferOutput.FLOAT32 else np.dtype(np.int8)
        _need(p, h + c + out_len * dt.itemsize, "InferResult")
        logits = np.frombuffer(p, np.int8, c, h).copy()
        out = np.frombuffer(p, dt, out_len, h + c)
        return cls(
            logits, out_type, out.astype(np.float32) if out_type == InferOutput.FLOAT32 else out.copy()
        )

    def output_bytes(self) -> bytes:
        """The output as the board sent it (int8 bytes, or float32 little-endian)."""
        dt = np.dtype("<f4") if self.out_type == InferOutput.FLOAT32 else np.dtype(np.int8)
        return np.asarray(self.output).reshape(-1).astype(dt).tobytes()


@dataclass
class LabelRequest:
    """LABEL: ``sample_ids`` [n] (u32, as PUSH_SAMPLES numbered them) and their ``labels`` [n] (u16: a class, or
    UNLABELLED to take a label back)."""

    sample_ids: np.ndarray
    labels: np.ndarray

    def encode(self) -> bytes:
        n = len(self.sample_ids)
        rows = np.zeros(n, dtype=LABEL_ENTRY)
        rows["id"], rows["label"] = self.sample_ids, self.labels
        return struct.pack("<H", n) + rows.tobytes()

    @classmethod
    def decode(cls, p: bytes) -> LabelRequest:
        _need(p, 2, "LabelRequest", exact=False)
        (n,) = struct.unpack_from("<H", p)
        _need(p, 2 + LABEL_ENTRY.itemsize * n, "LabelRequest")
        rows = np.frombuffer(p, LABEL_ENTRY, n, 2)
        return cls(rows["id"].astype(np.int64), rows["label"].astype(np.int64))


@dataclass
class LabelResult(FixedLayout, fmt="<II"):
    applied: int  # entries whose sample was still in the cache
    labelled: int  # cached samples that now have a label


#: one LABEL entry: u32 sample id, u16 label (6 bytes, packed)
LABEL_ENTRY = np.dtype([("id", "<u4"), ("label", "<u2")])


@dataclass
class Confirm:
    slot: int
    tolerance: int
    inputs: np.ndarray  # i8 [n, in_len]
    expected: np.ndarray  # i8 [n, out_len]

    def encode(self) -> bytes:
        n, il = self.inputs.shape
        ol = self.expected.shape[1]
        body = np.concatenate([self.inputs.astype(np.int8), self.expected.astype(np.int8)], axis=1)
        return CONFIRM_HEADER.pack(self.slot, self.tolerance, n, il, ol) + body.tobytes()

    @classmethod
    def decode(cls, p: bytes) -> Confirm:
        h = CONFIRM_HEADER.size
        _need(p, h, "Confirm", exact=False)
        slot, tol, n, il, ol = CONFIRM_HEADER.unpack_from(p)
        _need(p, h + n * (il + ol), "Confirm")
        body = np.frombuffer(p, np.int8, n * (il + ol), h).reshape(n, il + ol)
        return cls(slot, tol, body[:, :il].copy(), body[:, il:].copy())


@dataclass
class SlotInfo:
    state: int
    kind: int
    total_len: int
    received: int
    sha256: bytes = bytes(32)


@dataclass
class SlotStatus:
    active: int
    confirmed: int
    flags: int
    slots: list[SlotInfo] = field(default_factory=list)

    def encode(self) -> bytes:
        out = SLOT_STATUS_HEADER.pack(len(self.slots), self.active, self.confirmed, self.flags)
        for s in self.slots:
            out += SLOT_INFO.pack(s.state, s.kind, 0, s.total_len, s.received, s.sha256)
        return out

    @classmethod
    def decode(cls, p: bytes) -> SlotStatus:
        h, w = SLOT_STATUS_HEADER.size, SLOT_INFO.size
        _need(p, h, "SlotStatus", exact=False)
        n, active, confirmed, flags = SLOT_STATUS_HEADER.unpack_from(p)
        _need(p, h + w * n, "SlotStatus")
        slots = []
        for i in range(n):
            st, kind, _, total, rec, sha = SLOT_INFO.unpack_from(p, h + w * i)
            slots.append(SlotInfo(st, kind, total, rec, sha))
        return cls(active, confirmed, flags, slots)


def u32(p: bytes, what: str) -> int:
    """Decode a payload that is exactly one u32."""
    _need(p, 4, what)
    return int(struct.unpack("<I", p)[0])


def u8(p: bytes, what: str) -> int:
    _need(p, 1, what)
    return p[0]
