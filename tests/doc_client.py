"""An independent host for the fedtiny link protocol, written only from docs/protocol.md.

Deliberately imports nothing from ``fedtiny.link``, ``fedtiny.clients.board`` or ``firmware``: framing (COBS,
CRC-32, header), the message layouts and the host retry rules are re-implemented here from the
document, so that ``tests/test_protocol_doc_client.py`` checks the document against the virtual board
(``fedtiny emulate``), not the implementation against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROTO_VERSION = 1
HEADER = struct.Struct("<BBBBHH")  # version, type, flags, status, seq, len
FLAG_RESPONSE = 0x01
FLAG_RETRY = 0x02
PRE_HELLO_MAX_PAYLOAD = 256

# section 4
HELLO, STATUS, RESET = 0x01, 0x02, 0x03
GET_HEAD, SET_HEAD, PUSH_SAMPLES, TRAIN, READ_UPDATE, UPDATE_ACK, EVALUATE = (
    0x10,
    0x11,
    0x12,
    0x13,
    0x14,
    0x15,
    0x16,
)
LABEL = 0x17
INFER = 0x18
STAGE_INPUT = 0x19
UPLOAD_BEGIN, UPLOAD_CHUNK, UPLOAD_STATUS, VERIFY, ACTIVATE, CONFIRM, ROLLBACK = (
    0x20,
    0x21,
    0x22,
    0x23,
    0x24,
    0x25,
    0x26,
)

# section 2
STATUS_NAMES = {
    0: "OK",
    1: "UNKNOWN_TYPE",
    2: "BAD_VERSION",
    3: "MALFORMED",
    4: "BAD_STATE",
    5: "BAD_OFFSET",
    6: "HASH_MISMATCH",
    7: "AUTH_FAILED",
    8: "NO_SPACE",
    9: "NO_UPDATE",
    10: "UPDATE_PENDING",
    11: "SELFTEST_FAILED",
    12: "SHAPE_MISMATCH",
    13: "FLASH_ERROR",
    14: "BUSY",
    15: "UNSUPPORTED",
    16: "CACHE_EMPTY",
    17: "DOWNGRADE",
    255: "INTERNAL",
}
STATUS_CODES = {v: k for k, v in STATUS_NAMES.items()}

# capabilities (HELLO)
CAP_TRAIN, CAP_EVALUATE, CAP_RAW_SAMPLES, CAP_HEAD_PATCH, CAP_FULL_IMAGE = 1, 2, 4, 8, 16
CAP_FLEET_KEY, CAP_SET_HEAD, CAP_FLOAT_TRAIN, CAP_FIXED_TRAIN = 32, 64, 128, 256
CAP_SIGNED_IMAGES, CAP_DEVICE_KEY, CAP_LABELS, CAP_INFER = 512, 1024, 2048, 4096
CAP_STAGED_INPUT = 8192

# PUSH_SAMPLES / LABEL: the label of a sample without one; TrainRequest flags
NO_LABEL = 0xFFFF
TRAIN_FIXED, TRAIN_PSEUDO = 1, 2

# slot states (section 5)
EMPTY, RECEIVING, VERIFIED, TESTING, CONFIRMED = 0, 1, 2, 3, 4
KIND_HEAD_PATCH, KIND_FULL_IMAGE = 1, 2
ANY_SLOT = 0xFF


class DeviceError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{STATUS_NAMES.get(status, f'status {status}')}: {reason}")


class LinkError(Exception):
    pass


# ---------------------------------------------------------------------------------------------- framing


def crc32(data: bytes) -> int:
    """IEEE 802.3 CRC-32 (reflected, poly 0xEDB88320, init and final xor 0xFFFFFFFF), bitwise."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS without the trailing delimiter."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    # The final block. A frame ending right after a 255-block still gets the code byte 0x01 (one
    # "phantom" zero at the very end, which the decoder drops): "overhead 1 byte per 254 plus 1".
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        i += 1
        block = data[i : i + code - 1]
        if len(block) != code - 1 or 0 in block:
            raise ValueError("truncated COBS block")
        out += block
        i += code - 1
        if code < 255 and i < len(data):
            out.append(0)
    return bytes(out)


def cobs_max(n: int) -> int:
    return n + n // 254 + 1


@dataclass
class Frame:
    version: int
    type: int
    flags: int
    status: int
    seq: int
    payload: bytes

    def decoded(self) -> bytes:
        head = HEADER.pack(self.version, self.type, self.flags, self.status, self.seq, len(self.payload))
        body = head + self.payload
        return body + struct.pack("<I", crc32(body))

    def wire(self) -> bytes:
        return cobs_encode(self.decoded()) + b"\x00"


def parse_decoded(raw: bytes) -> Frame | None:
    """Header | payload | crc -> Frame, or None for a frame the doc says to drop silently."""
    if len(raw) < 12:
        return None
    body, (crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
    if crc32(body) != crc:
        return None
    version, typ, flags, status, seq, length = HEADER.unpack(body[:8])
    if length != len(body) - 8:
        return None
    return Frame(version, typ, flags, status, seq, bytes(body[8:]))


def parse_wire(encoded: bytes) -> Frame | None:
    """One wire frame without its 0x00 delimiter."""
    try:
        return parse_decoded(cobs_decode(encoded))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------- messages


@dataclass
class HelloInfo:
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

    @classmethod
    def parse(cls, p: bytes) -> HelloInfo:
        (
            pv,
            n_slots,
            max_payload,
            device_id,
            caps,
            c,
            d,
            cap,
            count,
            max_image,
            raw_len,
            rx_window,
            active,
        ) = struct.unpack_from("<BBHIIHHIIIHBB", p, 0)
        n = p[32]
        name = p[33 : 33 + n].decode("utf-8")
        m = p[33 + n]
        fw = p[34 + n : 34 + n + m].decode("utf-8")
        if len(p) != 34 + n + m:
            raise ValueError(f"HelloInfo of {len(p)} bytes, expected {34 + n + m}")
        return cls(
            pv,
            n_slots,
            max_payload,
            device_id,
            caps,
            c,
            d,
            cap,
            count,
            max_image,
            raw_len,
            rx_window,
            active,
            name,
            fw,
        )

    def encode(self) -> bytes:
        name, fw = self.board_name.encode(), self.fw_version.encode()
        return (
            struct.pack(
                "<BBHIIHHIIIHBB",
                self.proto_version,
                self.n_slots,
                self.max_payload,
                self.device_id,
                self.capabilities,
                self.C,
                self.D,
                self.cache_capacity,
                self.cache_count,
                self.max_image,
                self.raw_input_len,
                self.rx_window,
                self.active_slot,
            )
            + bytes([len(name)])
            + name
            + bytes([len(fw)])
            + fw
        )


@dataclass
class SlotInfo:
    state: int
    kind: int
    total_len: int
    received: int
    sha256: bytes


@dataclass
class SlotStatus:
    n_slots: int
    active: int
    confirmed: int
    flags: int
    slots: list[SlotInfo] = field(default_factory=list)

    @classmethod
    def parse(cls, p: bytes) -> SlotStatus:
        n, active, confirmed, flags = struct.unpack_from("<BBBB", p, 0)
        if len(p) != 4 + 44 * n:
            raise ValueError(f"SlotStatus of {len(p)} bytes for {n} slots")
        slots = []
        for i in range(n):
            state, kind, _res, total, received = struct.unpack_from("<BBHII", p, 4 + 44 * i)
            sha = p[4 + 44 * i + 12 : 4 + 44 * i + 44]
            slots.append(SlotInfo(state, kind, total, received, bytes(sha)))
        return cls(n, active, confirmed, flags, slots)


@dataclass
class UploadState:
    slot: int
    state: int
    resumed: int
    total_len: int
    received: int
    prefix_crc32: int

    @classmethod
    def parse(cls, p: bytes) -> UploadState:
        if len(p) != 16:
            raise ValueError(f"UploadState of {len(p)} bytes")
        slot, state, resumed, _res, total, received, pcrc = struct.unpack("<BBBBIII", p)
        return cls(slot, state, resumed, total, received, pcrc)


@dataclass
class HeadPatch:
    """The int8 head (docs/protocol.md "HeadPatch"); fields named as in fedtiny.ondevice.Int8Head."""

    weights: np.ndarray  # int8 [C, D]
    weight_scales: np.ndarray  # float32 [C]
    bias: np.ndarray  # int32 [C]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    MAGIC = b"FTHP"

    @property
    def C(self) -> int:
        return int(self.weights.shape[0])

    @property
    def D(self) -> int:
        return int(self.weights.shape[1])

    def encode(self) -> bytes:
        c, d = self.weights.shape
        return (
            self.MAGIC
            + struct.pack(
                "<BBHHbbff",
                1,
                0,
                c,
                d,
                self.input_zero_point,
                self.output_zero_point,
                self.input_scale,
                self.output_scale,
            )
            + np.asarray(self.weight_scales, "<f4").tobytes()
            + np.asarray(self.bias, "<i4").tobytes()
            + np.asarray(self.weights, np.int8).tobytes()
        )

    @classmethod
    def parse(cls, p: bytes) -> HeadPatch:
        if p[:4] != cls.MAGIC:
            raise ValueError("not a head patch")
        version, _flags, c, d, zin, zout, sin, sout = struct.unpack_from("<BBHHbbff", p, 4)
        if version != 1 or len(p) != 20 + 8 * c + c * d:
            raise ValueError("bad head patch version or size")
        ws = np.frombuffer(p, "<f4", c, 20).astype(np.float32)
        bias = np.frombuffer(p, "<i4", c, 20 + 4 * c).astype(np.int32)
        w = np.frombuffer(p, np.int8, c * d, 20 + 8 * c).reshape(c, d).copy()
        return cls(w, ws, bias, float(sin), int(zin), float(sout), int(zout))

    def to_int8_head(self):
        from fedtiny.ondevice import Int8Head

        return Int8Head(
            self.weights,
            self.weight_scales,
            self.bias,
            self.input_scale,
            self.input_zero_point,
            self.output_scale,
            self.output_zero_point,
        )


@dataclass
class UpdateBlob:
    C: int
    D: int
    device_id: int
    update_id: int
    round: int
    num_examples: int
    loss: float
    weights: np.ndarray  # float32 [C, D]
    bias: np.ndarray  # float32 [C]
    tag: bytes
    signed_bytes: bytes  # everything the tag covers

    @classmethod
    def parse(cls, p: bytes) -> UpdateBlob:
        if p[:4] != b"FTUP":
            raise ValueError("not an update blob")
        version, _r, c, d, _r2, dev, uid, rnd, nex, loss = struct.unpack_from("<BBHHHIIIIf", p, 4)
        if version != 1 or len(p) != 32 + 4 * c * d + 4 * c + 32:
            raise ValueError("bad update blob version or size")
        w = np.frombuffer(p, "<f4", c * d, 32).reshape(c, d).astype(np.float32)
        b = np.frombuffer(p, "<f4", c, 32 + 4 * c * d).astype(np.float32)
        return cls(c, d, dev, uid, rnd, nex, float(loss), w, b, bytes(p[-32:]), bytes(p[:-32]))

    def verify(self, key: bytes, expected_device_id: int) -> None:
        """What a gateway MUST check (section 4 "UpdateBlob", section 7)."""
        if self.tag == bytes(32):
            raise ValueError("unsigned update (zero tag)")
        good = hmac.new(key, self.signed_bytes, hashlib.sha256).digest()
        if not hmac.compare_digest(good, self.tag):
            raise ValueError("update tag does not verify")
        if self.device_id != expected_device_id:
            raise ValueError(f"update of device {self.device_id}, expected {expected_device_id}")


def blob_read(offset: int, max_len: int) -> bytes:
    return struct.pack("<IH", offset, max_len)


def samples_payload(kind: int, labels, samples: np.ndarray, clear: bool = False) -> bytes:
    labels = np.asarray(labels, "<u2")
    n = len(labels)
    samples = np.asarray(samples)
    dim = samples.shape[-1] if n else 0
    data = samples.astype("<f4" if kind == 2 else np.int8).tobytes()
    return struct.pack("<BBHH", kind, 1 if clear else 0, n, dim) + labels.tobytes() + data


def staged_samples_payload(kind: int, labels, dim: int, clear: bool = False) -> bytes:
    """Samples of kind 3 (the staged input as int8) or 4 (as float32): n <= 1 labels, dim, no sample bytes."""
    labels = np.asarray(labels, "<u2")
    return struct.pack("<BBHH", kind, 1 if clear else 0, len(labels), dim) + labels.tobytes()


def stage_input_payload(total: int, offset: int, data: bytes) -> bytes:
    """STAGE_INPUT: u32 total, u32 offset, then the piece's bytes."""
    return struct.pack("<II", total, offset) + bytes(data)


def train_payload(
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    prox_mu: float,
    seed: int,
    round_: int,
    flags: int | None = 0,
    pseudo: tuple[float, float] | None = None,
) -> bytes:
    """``pseudo``: (pseudo_margin, pseudo_weight), the 8 bytes a request with flag PSEUDO ends with."""
    p = struct.pack("<HHffffII", epochs, batch_size, lr, momentum, weight_decay, prox_mu, seed, round_)
    p = p if flags is None else p + struct.pack("<I", flags)  # flags None: the 28-byte legacy form
    return p if pseudo is None else p + struct.pack("<ff", *pseudo)


def label_payload(entries: list[tuple[int, int]]) -> bytes:
    """LabelRequest: u16 n, then n packed {u32 sample_id, u16 label} (label 0xFFFF takes a label back)."""
    return struct.pack("<H", len(entries)) + b"".join(struct.pack("<IH", i, lab) for i, lab in entries)


def infer_payload(kind: int, x) -> bytes:
    """InferRequest: u8 kind, u8 reserved, u16 dim, then the input (i8[dim], or f32[dim] for kind 2)."""
    x = np.asarray(x).reshape(-1)
    return struct.pack("<BBH", kind, 0, len(x)) + x.astype("<f4" if kind == 2 else np.int8).tobytes()


def infer_staged_payload(kind: int, dim: int) -> bytes:
    """InferRequest of kind 3 / 4 (the staged input as int8 / float32): the 4-byte header, no input bytes."""
    return struct.pack("<BBH", kind, 0, dim)


def infer_result(p: bytes) -> tuple[np.ndarray, int, np.ndarray]:
    """InferResult: u16 C, u8 out_type, u8 reserved, u16 out_len, i8[C] logits, then the output (i8[out_len], or
    f32[out_len] for out_type 2; none for out_type 0). Returns (logits, out_type, output)."""
    c, out_type, _, out_len = struct.unpack_from("<HBBH", p)
    if out_type not in (0, 1, 2) or (out_type == 0 and out_len):
        raise ValueError(f"InferResult out_type {out_type}, out_len {out_len}")
    esize = 4 if out_type == 2 else 1
    if len(p) != 6 + c + out_len * esize:
        raise ValueError(f"InferResult of {len(p)} bytes")
    logits = np.frombuffer(p, np.int8, c, 6)
    out = np.frombuffer(p, "<f4" if out_type == 2 else np.int8, out_len, 6 + c)
    return logits, out_type, out


def image_tag(key: bytes, kind: int, total_len: int, sha256: bytes, security_counter: int = 0) -> bytes:
    msg = b"FTIMG2" + struct.pack("<BI", kind, total_len) + sha256 + struct.pack("<I", security_counter)
    return hmac.new(key, msg, hashlib.sha256).digest()


def upload_begin_payload(
    kind: int,
    slot: int,
    image: bytes,
    key: bytes | None,
    restart: bool = False,
    tag: bytes | None = None,
    sha: bytes | None = None,
    security_counter: int = 0,
) -> bytes:
    sha = sha if sha is not None else hashlib.sha256(image).digest()
    if tag is None:
        tag = image_tag(key, kind, len(image), sha, security_counter) if key is not None else bytes(32)
    return (
        struct.pack("<BBBBI", kind, slot, 1 if restart else 0, 0, len(image))
        + sha
        + tag
        + struct.pack("<I", security_counter)
    )


def confirm_payload(slot: int, tolerance: int, inputs: np.ndarray, expected: np.ndarray) -> bytes:
    inputs = np.asarray(inputs, np.int8)
    expected = np.asarray(expected, np.int8)
    n, in_len = inputs.shape
    out_len = expected.shape[1]
    body = b"".join(inputs[i].tobytes() + expected[i].tobytes() for i in range(n))
    return struct.pack("<BBHHH", slot, tolerance, n, in_len, out_len) + body


# ------------------------------------------------------------------------------------------------- link


class DocClient:
    """Host side over a byte stream (a TCP socket to ``fedtiny emulate``), section 3 rules."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        base_timeout: float = 0.5,
        attempts: int = 8,
        op_timeouts: dict[int, float] | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.rx = bytearray()
        self.seq = random.randrange(1 << 16)
        self.base_timeout = base_timeout
        self.attempts = attempts
        self.op_timeouts = {TRAIN: 60.0, EVALUATE: 10.0, VERIFY: 10.0, **(op_timeouts or {})}
        self.max_payload = PRE_HELLO_MAX_PAYLOAD
        self.hello: HelloInfo | None = None
        self.retries = 0
        self.sent_frames: list[bytes] = []
        self.sock.sendall(b"\x00")  # flush any partial frame in the device's buffer (section 1)

    def close(self) -> None:
        self.sock.close()

    def drop(self, quiet: float = 0.2) -> None:
        """Abandon the link like a host that gives up: discard whatever still arrives, then close.

        (Reading the late answers first makes the close a FIN rather than an RST: `fedtiny emulate`
        sometimes exits when a peer resets the connection while answers are in flight.)
        """
        deadline = time.monotonic() + quiet
        self.sock.settimeout(quiet)
        try:
            while time.monotonic() < deadline and self.sock.recv(65536):
                deadline = time.monotonic() + quiet
        except OSError:
            pass
        self.sock.close()

    # -- raw byte stream
    def send_raw(self, data: bytes) -> None:
        self.sent_frames.append(data)
        self.sock.sendall(data)

    def recv_frame(self, deadline: float) -> Frame | str | None:
        """The next non-empty frame; 'corrupt' for a dropped one; None on timeout."""
        while True:
            idx = self.rx.find(0)
            if idx >= 0:
                enc = bytes(self.rx[:idx])
                del self.rx[: idx + 1]
                if not enc:
                    continue  # empty frame: ignored
                fr = parse_wire(enc)
                return fr if fr is not None else "corrupt"
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise LinkError("link closed by the device")
            self.rx += chunk

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def timeout_for(self, typ: int, req_len: int) -> float:
        if typ in self.op_timeouts:
            return self.op_timeouts[typ]
        return self.base_timeout  # a socket: wire_time is ~0

    # -- one exchange, with section 3 retries
    def exchange(
        self,
        typ: int,
        payload: bytes = b"",
        *,
        seq: int | None = None,
        version: int = PROTO_VERSION,
        raise_on_error: bool = True,
    ) -> Frame:
        if len(payload) > self.max_payload:
            raise ValueError(f"payload of {len(payload)} bytes > max_payload {self.max_payload}")
        seq = self.next_seq() if seq is None else seq
        req = Frame(version, typ, 0, 0, seq, payload)
        timeout = self.timeout_for(typ, len(payload))
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
                req.flags = FLAG_RETRY
            self.send_raw(req.wire())
            deadline = time.monotonic() + timeout
            while True:
                fr = self.recv_frame(deadline)
                if fr is None or fr == "corrupt":
                    break  # retry with the same seq
                assert isinstance(fr, Frame)
                if not fr.flags & FLAG_RESPONSE or fr.seq != seq:
                    continue  # stale duplicate
                if fr.type != typ:
                    break  # treated as timed out
                if raise_on_error and fr.status != 0:
                    raise DeviceError(fr.status, fr.payload.decode("utf-8", "replace"))
                return fr
        raise LinkError(f"no response to type 0x{typ:02x} seq {seq} after {self.attempts} attempts")

    def call(self, typ: int, payload: bytes = b"", **kw) -> bytes:
        return self.exchange(typ, payload, **kw).payload

    # -- messages
    def hello_(self) -> HelloInfo:
        info = HelloInfo.parse(self.call(HELLO))
        self.hello = info
        self.max_payload = info.max_payload
        return info

    def status(self) -> SlotStatus:
        return SlotStatus.parse(self.call(STATUS))

    def _read_blob(self, typ: int, with_id: bool, page: int) -> tuple[int | None, bytes, int]:
        out = bytearray()
        total = uid = None
        pages = 0
        while total is None or len(out) < total:
            p = self.call(typ, blob_read(len(out), page))
            pages += 1
            if with_id:
                (this_uid,) = struct.unpack_from("<I", p, 0)
                p = p[4:]
                if uid is not None and this_uid != uid:
                    raise LinkError("update_id changed between pages")
                uid = this_uid
            (this_total,) = struct.unpack_from("<I", p, 0)
            if total is not None and this_total != total:
                raise LinkError("total_len changed between pages")
            total = this_total
            data = p[4:]
            # BlobPage room: the response fills up to max_payload (u32 total_len; READ_UPDATE also u32 update_id)
            expect = min(page, total - len(out), self.max_payload - (8 if with_id else 4))
            if len(data) != expect:
                raise LinkError(f"page of {len(data)} bytes, expected {expect}")
            out += data
        return uid, bytes(out), pages

    def get_head(self, page: int = 4088) -> HeadPatch:
        _, blob, _ = self._read_blob(GET_HEAD, False, page)
        return HeadPatch.parse(blob)

    def set_head(self, patch: bytes, chunk: int) -> list[int]:
        """SET_HEAD in pieces; returns the `staged` answered to each piece."""
        out = []
        for off in range(0, len(patch), chunk):
            data = patch[off : off + chunk]
            out.append(
                struct.unpack("<I", self.call(SET_HEAD, struct.pack("<II", len(patch), off) + data))[0]
            )
        return out

    def push_samples(self, kind: int, labels, samples, clear: bool = False) -> tuple[int, int]:
        return struct.unpack("<II", self.call(PUSH_SAMPLES, samples_payload(kind, labels, samples, clear)))

    def train(self, *args, **kw) -> tuple[int, int, float]:
        return struct.unpack("<IIf", self.call(TRAIN, train_payload(*args, **kw)))

    def label(self, entries: list[tuple[int, int]]) -> tuple[int, int]:
        """LABEL: (applied, labelled)."""
        return struct.unpack("<II", self.call(LABEL, label_payload(entries)))

    def stage_input(self, data: bytes, piece: int | None = None, start: int = 0) -> tuple[int, int]:
        """STAGE_INPUT of ``data`` in pieces of ``piece`` bytes (at most max_payload - 8) from offset ``start``;
        a BAD_OFFSET answer (reason exactly ``staged N``) continues from N. Returns (staged, BAD_OFFSET answers)."""
        room = min(piece or self.max_payload - 8, self.max_payload - 8)
        off, resumes, staged = start, 0, 0
        while True:
            try:
                p = self.call(STAGE_INPUT, stage_input_payload(len(data), off, data[off : off + room]))
            except DeviceError as e:
                m = re.fullmatch(r"staged (\d+)", e.reason)
                if e.status != STATUS_CODES["BAD_OFFSET"] or not m or resumes > 4:
                    raise
                resumes += 1
                off = int(m.group(1))
                continue
            (staged,) = struct.unpack("<I", p)
            if staged == len(data):
                return staged, resumes
            off = staged

    def infer(self, kind: int, x) -> tuple[np.ndarray, int, np.ndarray]:
        """INFER: (logits, out_type, output)."""
        return infer_result(self.call(INFER, infer_payload(kind, x)))

    def read_update(self, page: int = 4088) -> tuple[UpdateBlob, int]:
        uid, blob, pages = self._read_blob(READ_UPDATE, True, page)
        ub = UpdateBlob.parse(blob)
        if ub.update_id != uid:
            raise LinkError("update_id of the page header differs from the blob's")
        return ub, pages

    def update_ack(self, update_id: int) -> None:
        if self.call(UPDATE_ACK, struct.pack("<I", update_id)) != b"":
            raise LinkError("UPDATE_ACK answer not empty")

    def evaluate(self, max_samples: int = 0) -> tuple[int, float, float]:
        return struct.unpack("<Iff", self.call(EVALUATE, struct.pack("<I", max_samples)))

    def upload_begin(self, *args, **kw) -> UploadState:
        return UploadState.parse(self.call(UPLOAD_BEGIN, upload_begin_payload(*args, **kw)))

    def upload_status(self, slot: int = ANY_SLOT) -> UploadState:
        return UploadState.parse(self.call(UPLOAD_STATUS, bytes([slot])))

    def upload_chunk(self, offset: int, data: bytes) -> int:
        return struct.unpack("<I", self.call(UPLOAD_CHUNK, struct.pack("<I", offset) + data))[0]

    def upload_chunks_pipelined(
        self, image: bytes, start: int, chunk: int, window: int, stop_after: int | None = None
    ) -> int:
        """Section 6 steps 3-4: up to ``window`` UPLOAD_CHUNKs in flight, go-back-N on a gap.

        ``stop_after``: abandon the upload (like a dropped link) after this many chunks were sent, without
        waiting for their responses. Returns the next offset the host believes in.
        """
        nxt = start
        sent = 0
        inflight: dict[int, int] = {}  # seq -> chunk end
        order: list[int] = []
        offset = start
        deadline = time.monotonic() + 5.0
        while nxt < len(image):
            while len(inflight) < window and offset < len(image):
                if stop_after is not None and sent >= stop_after:
                    return nxt
                data = image[offset : offset + chunk]
                seq = self.next_seq()
                self.send_raw(
                    Frame(PROTO_VERSION, UPLOAD_CHUNK, 0, 0, seq, struct.pack("<I", offset) + data).wire()
                )
                inflight[seq] = offset + len(data)
                order.append(seq)
                offset += len(data)
                sent += 1
            fr = self.recv_frame(deadline)
            if not isinstance(fr, Frame):
                # timeout: UPLOAD_STATUS and continue from its received
                st = self.upload_status()
                inflight.clear()
                order.clear()
                nxt = offset = st.received
                deadline = time.monotonic() + 5.0
                continue
            if not fr.flags & FLAG_RESPONSE or fr.seq not in inflight or fr.type != UPLOAD_CHUNK:
                continue
            if fr.status != 0:
                raise DeviceError(fr.status, fr.payload.decode("utf-8", "replace"))
            (got,) = struct.unpack("<I", fr.payload)
            end = inflight.pop(fr.seq)
            order.remove(fr.seq)
            if got != end:  # a gap: abandon everything in flight, go back
                inflight.clear()
                order.clear()
                nxt = offset = got
            else:
                nxt = max(nxt, got)
        # drain answers of chunks still in flight (none should remain once nxt == len(image))
        return nxt

    def verify(self, slot: int) -> tuple[int, int, bytes]:
        p = self.call(VERIFY, bytes([slot]))
        if len(p) != 34:
            raise LinkError(f"VERIFY answer of {len(p)} bytes")
        return p[0], p[1], p[2:]

    def activate(self, slot: int) -> SlotStatus:
        return SlotStatus.parse(self.call(ACTIVATE, bytes([slot])))

    def confirm(self, *args) -> SlotStatus:
        return SlotStatus.parse(self.call(CONFIRM, confirm_payload(*args)))

    def rollback(self) -> SlotStatus:
        return SlotStatus.parse(self.call(ROLLBACK))


# ------------------------------------------------------------------------------------------ test vectors


@dataclass
class Vector:
    title: str
    decoded: bytes
    wire: bytes


def doc_vectors(doc: Path) -> list[Vector]:
    text = doc.read_text()
    block = text.split("VECTORS-BEGIN", 1)[1].split("VECTORS-END", 1)[0]
    out = []
    for m in re.finditer(
        r"^\* (.+?)\n\s+- decoded: `([0-9a-f]+)`\n\s+- wire: `([0-9a-f]+)`", block, re.MULTILINE
    ):
        out.append(Vector(m.group(1).strip(), bytes.fromhex(m.group(2)), bytes.fromhex(m.group(3))))
    return out
