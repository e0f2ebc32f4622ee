"""BoardSession: the host side of docs/protocol.md over any Transport."""

from __future__ import annotations

import dataclasses
import random
import re
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtiny.errors import DeviceError, LinkError, ProtocolError, UpdateRejected
from fedtiny.link.blobs import UpdateBlob, decode_head_patch, encode_head_patch
from fedtiny.link.frames import FLAG_RETRY, MIN_MAX_PAYLOAD, Frame, FrameReader, encode_frame
from fedtiny.link.messages import (
    ANY_SLOT,
    HELLO_EXT,
    PUSH_RESULT,
    SAMPLES_HEADER,
    STAGE_INPUT_HEADER,
    TRAIN_PSEUDO,
    UNLABELLED,
    UPLOAD_RESTART,
    BlobRead,
    Cap,
    Confirm,
    EvalResult,
    HelloInfo,
    ImageKind,
    InferRequest,
    InferResult,
    LabelRequest,
    LabelResult,
    MsgType,
    SampleKind,
    Samples,
    SlotStatus,
    Status,
    TrainRequest,
    TrainResult,
    UploadBegin,
    UploadState,
    u32,
)
from fedtiny.link.signing import KeyChange, KeySet, parse_image, sign_image
from fedtiny.link.transport import Transport
from fedtiny.ondevice import Int8Head, head_forward_int8


def _type_name(mtype: int) -> str:
    """The message type's name for errors; a type this host does not know (UNKNOWN_TYPE probes) as `type 0xNN`."""
    return MsgType(mtype).name if mtype in MsgType._value2member_map_ else f"type 0x{mtype:02x}"


@dataclass(frozen=True)
class PushResult:
    """What one push of samples (possibly several PUSH_SAMPLES requests) answered: the cached count and
    ``pushed_total`` after the last request, and the sample id of every pushed sample, in order
    (docs/protocol.md "Sample ids"; LABEL addresses samples by them)."""

    cached: int
    pushed_total: int
    ids: np.ndarray  # int64 [n]


def wire_labels(labels: np.ndarray | None, n: int) -> np.ndarray:
    """Labels as PUSH_SAMPLES / LABEL carry them (u16 values in int64): a class, or UNLABELLED for none, which
    -1 (the int arrays' "no label") and None (every sample unlabelled) also mean."""
    if labels is None:
        return np.full(n, UNLABELLED, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(lab) != n:
        raise ProtocolError(f"{len(lab)} labels for {n} samples")
    lab = np.where(lab == -1, UNLABELLED, lab)
    if len(lab) and (int(lab.min()) < 0 or int(lab.max()) > UNLABELLED):
        raise ProtocolError("labels must be classes 0..65534, or -1 / 0xFFFF for no label")
    return lab


def device_error(mtype: int, status: int, payload: bytes) -> DeviceError:
    """The DeviceError of an error response: request type, status code (and their names) and the board's text."""
    name = Status(status).name if status in Status._value2member_map_ else str(status)
    return DeviceError(mtype, _type_name(mtype), status, name, payload.decode(errors="replace"))


class BoardSession:
    """Request/response with idempotent retries (same seq on timeout or corrupt frame)."""

    def __init__(
        self,
        transport: Transport,
        timeout: float = 0.5,
        retries: int = 8,
        key: bytes | None = None,
        seed: int | None = None,
        payload_limit: int | None = None,
    ) -> None:
        """`payload_limit` caps frame payloads below the device's max (small frames on a noisy link)."""
        self.t = transport
        self.timeout, self.retries, self.key = timeout, retries, key
        self.payload_limit = payload_limit or 0xFFFF
        self.op_timeout = 60.0  # TRAIN; EVALUATE, VERIFY and CONFIRM use min(op_timeout, 10 s)
        self.seq = random.Random(seed).randrange(0x10000)
        self.reader = FrameReader()
        self.info: HelloInfo | None = None
        self.retried = 0
        self._pending: deque[Frame] = deque()
        try:
            self.t.write(b"\x00")  # flush a partial frame on the device
        except LinkError:
            pass  # the first request's retries will tell

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    @property
    def max_payload(self) -> int:
        return min(self.info.max_payload if self.info else MIN_MAX_PAYLOAD, self.payload_limit)

    def request(self, mtype: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one request and return the OK response payload; DeviceError on an error status."""
        if self.info is not None and len(payload) > self.info.max_payload:
            raise ProtocolError(
                f"{_type_name(mtype)}: payload of {len(payload)} bytes, the device takes at most "
                f"{self.info.max_payload}"
            )
        seq = self._next_seq()
        tmo = timeout or self.timeout
        for attempt in range(self.retries):
            flags = FLAG_RETRY if attempt else 0
            self.retried += bool(attempt)
            self.t.write(encode_frame(Frame(mtype, seq, payload, flags)))
            fr = self._wait({seq}, tmo)
            if fr is None or fr.type != mtype:
                continue
            if fr.status != Status.OK:
                raise device_error(mtype, fr.status, fr.payload)
            return fr.payload
        raise LinkError(f"{_type_name(mtype)}: no valid response after {self.retries} attempts")

    def _wait(self, seqs: set[int], timeout: float) -> Frame | None:
        """The first response with a seq in `seqs`; None on timeout or on a corrupt frame."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                fr = self._pending.popleft()
                if fr.is_response and fr.seq in seqs:
                    return fr
            dropped = self.reader.dropped
            self._pending.extend(self.reader.feed(self.t.read(max(0.0, deadline - time.monotonic()))))
            if not self._pending and (self.reader.dropped != dropped or time.monotonic() >= deadline):
                return None

    # ----- messages -----
    def hello(self) -> HelloInfo:
        """HELLO asking for the extension (arena_bytes); a board that predates it refuses the payload (MALFORMED),
        then the plain HELLO (info.arena_bytes None)."""
        try:
            payload = self.request(MsgType.HELLO, bytes([HELLO_EXT]))
        except DeviceError:
            payload = self.request(MsgType.HELLO)
        self.info = HelloInfo.decode(payload)
        self.reader = FrameReader(0xFFFF)
        return self.info

    def status(self) -> SlotStatus:
        return SlotStatus.decode(self.request(MsgType.STATUS))

    def reset(self) -> None:
        self.request(MsgType.RESET, b"\x00")

    def _read_blob(self, mtype: int, with_id: bool) -> tuple[int, bytes]:
        out, uid, total = bytearray(), None, None
        hdr = 8 if with_id else 4
        while total is None or len(out) < total:
            p = self.request(mtype, BlobRead(len(out), self.max_payload - hdr).encode())
            this_uid = struct.unpack_from("<I", p)[0] if with_id else 0
            this_total = struct.unpack_from("<I", p, hdr - 4)[0]
            changed = (uid, total) != (None, None) and (this_uid, this_total) != (uid, total)
            uid, total = this_uid, this_total
            if changed:  # the object changed between pages: this page is from the old offset, start over
                out.clear()
                continue
            out += p[hdr:]
            if len(p) == hdr and len(out) < total:
                raise LinkError("empty page before the end of the object")
        return uid or 0, bytes(out)

    def get_head(self) -> Int8Head:
        return decode_head_patch(self._read_blob(MsgType.GET_HEAD, False)[1])

    def set_head(self, head: Int8Head) -> None:
        patch = encode_head_patch(head)
        room = self.max_payload - 8
        for off in range(0, len(patch), room):
            self.request(MsgType.SET_HEAD, struct.pack("<II", len(patch), off) + patch[off : off + room])

    def push_samples(self, features: np.ndarray, labels: np.ndarray | None, clear: bool = False) -> int:
        """Append int8 features [N, D] + labels to the board's cache; returns the cached count. A label -1 or
        UNLABELLED (None: all) pushes the sample without one (needs LABELS); :meth:`push_samples_ids` also
        returns the samples' ids."""
        return self.push_samples_ids(features, labels, clear).cached

    def push_samples_ids(
        self, features: np.ndarray, labels: np.ndarray | None = None, clear: bool = False
    ) -> PushResult:
        """:meth:`push_samples`, answering the cached count, ``pushed_total`` and the pushed samples' ids."""
        features = np.asarray(features, np.int8)
        return self._push(SampleKind.FEATURES, features, labels, clear)

    def push_raw(self, x: np.ndarray, labels: np.ndarray | None, clear: bool = False) -> int:
        """Append raw samples [N, ...] (needs RAW_SAMPLES): the board runs its backbone and caches the features.

        float inputs go as kind 2 (the board quantizes them with the model's input scale/zero point), int8
        inputs as kind 1 (already quantized). A sample larger than one frame (a camera-sized input) is staged in
        pieces (:meth:`stage_input`, needs STAGED_INPUT) and pushed as kind 3 or 4, one per request. Returns the
        cached count; :meth:`push_raw_ids` also the ids.
        """
        return self.push_raw_ids(x, labels, clear).cached

    def push_raw_ids(
        self, x: np.ndarray, labels: np.ndarray | None = None, clear: bool = False
    ) -> PushResult:
        """:meth:`push_raw`, answering the cached count, ``pushed_total`` and the pushed samples' ids."""
        x = np.asarray(x)
        n = len(x)
        flat = x.reshape(n, -1) if n else x.reshape(0, max(1, int(np.prod(x.shape[1:]))))
        kind = SampleKind.RAW_INT8 if x.dtype == np.int8 else SampleKind.RAW_F32
        return self._push(kind, flat, labels, clear)

    def stage_input(self, data: bytes) -> int:
        """STAGE_INPUT (needs STAGED_INPUT): stage one raw input's bytes on the board in pieces that fit a frame,
        resuming where the board is (a BAD_OFFSET answer, reason ``staged N``, gives the staged length). Returns the
        staged length (``len(data)``)."""
        total, room = len(data), max(1, self.max_payload - STAGE_INPUT_HEADER.size)
        off = staged = 0
        restarts = 0
        while True:
            piece = data[off : off + room]
            try:
                (staged,) = struct.unpack(
                    "<I", self.request(MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(total, off) + piece)
                )
            except DeviceError as e:
                m = re.fullmatch(r"staged (\d+)", e.detail)
                if e.status != Status.BAD_OFFSET or m is None or restarts > 8:
                    raise
                restarts += 1
                staged = int(m.group(1))  # resume from the board's staged length (0: restart)
            if staged >= total:
                return staged
            off = staged

    @property
    def info_d(self) -> int:
        """D (head input features) from HELLO, 0 before it."""
        return self.info.D if self.info else 0

    @property
    def _stages(self) -> bool:
        """The board stages raw inputs larger than a frame (STAGED_INPUT, learnt at HELLO)."""
        return self.info is not None and bool(self.info.capabilities & Cap.STAGED_INPUT)

    def _push_staged(self, kind: int, flat: np.ndarray, lab: np.ndarray, clear: bool) -> PushResult:
        """PUSH_SAMPLES of raw samples larger than a frame: each one staged (STAGE_INPUT), then pushed as kind 3
        (int8) or 4 (float32) with n = 1 (CLEAR on the first)."""
        staged_kind = SampleKind.STAGED_INT8 if kind == SampleKind.RAW_INT8 else SampleKind.STAGED_F32
        cached = pushed = 0
        for i in range(len(flat)):
            self.stage_input(np.ascontiguousarray(flat[i], Samples.dtype(kind)).tobytes())
            s = Samples(
                staged_kind, 1 if clear and i == 0 else 0, lab[i : i + 1], flat[:1, :0], flat.shape[1]
            )
            cached, pushed = PUSH_RESULT.unpack(self.request(MsgType.PUSH_SAMPLES, s.encode()))
        n = len(flat)  # ids: one per request, in order, so the last n ids below pushed_total
        return PushResult(cached, pushed, (pushed - n + np.arange(n, dtype=np.int64)) & 0xFFFFFFFF)

    def _push(self, kind: int, flat: np.ndarray, labels: np.ndarray | None, clear: bool) -> PushResult:
        """PUSH_SAMPLES of ``flat`` [N, dim] in as many requests as the payload limit needs (CLEAR on the first).
        A raw sample larger than one request is staged (STAGE_INPUT) and pushed as kind 3 or 4, one per request."""
        n = len(flat)
        lab = wire_labels(labels, n)
        size = Samples.dtype(kind).itemsize * flat.shape[1] + 2
        if (
            kind != SampleKind.FEATURES
            and n
            and SAMPLES_HEADER.size + size > self.max_payload
            and self._stages
        ):
            return self._push_staged(kind, flat, lab, clear)
        per = max(1, min((self.max_payload - 6) // size, 0xFFFF))
        cached = pushed = 0
        ids: list[np.ndarray] = []
        for i in range(0, max(n, 1), per):
            flags = 1 if clear and i == 0 else 0
            s = Samples(kind, flags, lab[i : i + per], flat[i : i + per])
            cached, pushed = PUSH_RESULT.unpack(self.request(MsgType.PUSH_SAMPLES, s.encode()))
            m = len(s.labels)  # their ids: pushed - m .. pushed - 1 (u32, as pushed_total wraps)
            ids.append((pushed - m + np.arange(m, dtype=np.int64)) & 0xFFFFFFFF)
        return PushResult(cached, pushed, np.concatenate(ids))

    def label(self, sample_ids: np.ndarray, labels: np.ndarray) -> LabelResult:
        """LABEL (needs LABELS): give the cached samples ``sample_ids`` (as :meth:`push_samples_ids` returned
        them) their ``labels`` (a class, or -1 / UNLABELLED to take a label back), in as many requests as the
        payload limit needs. Samples no longer cached are skipped by the board: ``applied`` counts the others
        (summed over the requests), ``labelled`` is the board's count of labelled samples after the last."""
        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        lab = wire_labels(labels, len(ids))
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) > 0xFFFFFFFF):
            raise ProtocolError("sample ids are u32")
        per = max(1, min((self.max_payload - 2) // 6, 0xFFFF))
        applied, res = 0, LabelResult(0, 0)
        for i in range(0, max(len(ids), 1), per):
            req = LabelRequest(ids[i : i + per], lab[i : i + per])
            res = LabelResult.decode(self.request(MsgType.LABEL, req.encode()))
            applied += res.applied
        return LabelResult(applied, res.labelled)

    def train(
        self,
        req: TrainRequest,
        timeout: float | None = None,
        *,
        pseudo_margin: float | None = None,
        pseudo_weight: float = 1.0,
    ) -> TrainResult:
        """TRAIN. With ``pseudo_margin`` (needs LABELS) the request gets flag PSEUDO: unlabelled samples whose
        running head's margin is at least ``pseudo_margin`` train on its label with weight ``pseudo_weight``
        (docs/ondevice.md §5a; ``fedtiny.ondevice.pseudo.pseudo_threshold`` turns a confidence into a margin).
        Without ``pseudo_margin`` the request is sent as it is (a ``req`` with flag PSEUDO and its own fields)."""
        if pseudo_margin is not None:
            req = dataclasses.replace(
                req, flags=req.flags | TRAIN_PSEUDO, pseudo_margin=pseudo_margin, pseudo_weight=pseudo_weight
            )
        return TrainResult.decode(self.request(MsgType.TRAIN, req.encode(), timeout or self.op_timeout))

    def read_update(self, verify_key: bytes | None = None) -> UpdateBlob:
        """The pending update; with a key (default: the session key) the HMAC and device id are checked.

        `verify_key` is the board's per-device update key (`fedtiny.link.signing.device_key`) or the fleet key."""
        uid, raw = self._read_blob(MsgType.READ_UPDATE, True)
        upd = UpdateBlob.decode(raw)
        key = verify_key or self.key
        if upd.update_id != uid:
            raise UpdateRejected(f"update id {upd.update_id} != page id {uid}")
        if self.info and upd.device_id != self.info.device_id:
            raise UpdateRejected(
                f"update claims device {upd.device_id}, link is device {self.info.device_id}"
            )
        if key and not upd.verify(key):
            which = "per-device" if verify_key else "fleet"
            raise UpdateRejected(
                f"update {uid} of device {upd.device_id}: bad HMAC tag (under the {which} key)"
            )
        return upd

    def pending_update_id(self) -> int:
        """The id of the pending update, without verifying it (to acknowledge and drop a bad one)."""
        return self._read_blob(MsgType.READ_UPDATE, True)[0]

    def ack_update(self, update_id: int) -> None:
        self.request(MsgType.UPDATE_ACK, struct.pack("<I", update_id))

    def evaluate(self, max_samples: int = 0, timeout: float | None = None) -> EvalResult:
        tmo = timeout or self._short_op
        return EvalResult.decode(self.request(MsgType.EVALUATE, struct.pack("<I", max_samples), tmo))

    def infer(self, x: np.ndarray, features: bool = False, timeout: float | None = None) -> InferResult:
        """INFER (needs the INFER capability): one input through the board's running head or model; returns its
        int8 logits and the model's output (:class:`InferResult`). ``features=True``: ``x`` is int8 features of
        length D (kind 0, only the head and the ops after it run); else a raw input of raw_input_len elements
        (any shape, flattened), int8 as kind 1 (already quantized), float as kind 2 (the board quantizes it); a raw
        input larger than one frame is staged first (:meth:`stage_input`, needs STAGED_INPUT) and sent as kind 3
        or 4."""
        x = np.asarray(x).reshape(-1)
        if features:
            req = InferRequest(SampleKind.FEATURES, x.astype(np.int8))
        elif x.dtype == np.int8:
            req = InferRequest(SampleKind.RAW_INT8, x)
        else:
            req = InferRequest(SampleKind.RAW_F32, x.astype(np.float32))
        if req.kind != SampleKind.FEATURES and len(req.encode()) > self.max_payload:
            if self._stages:  # larger than a frame: staged, then kind 3 or 4
                self.stage_input(req.data.astype(Samples.dtype(req.kind)).tobytes())
                staged = SampleKind.STAGED_INT8 if req.kind == SampleKind.RAW_INT8 else SampleKind.STAGED_F32
                req = InferRequest(staged, np.zeros(0, req.data.dtype), len(req.data))
        tmo = timeout or self._short_op
        return InferResult.decode(self.request(MsgType.INFER, req.encode(), tmo))

    @property
    def _short_op(self) -> float:
        return max(self.timeout, min(self.op_timeout, 10.0))

    # ----- uploads -----
    def upload_status(self, slot: int = ANY_SLOT) -> UploadState:
        return UploadState.decode(self.request(MsgType.UPLOAD_STATUS, bytes([slot])))

    def upload(
        self,
        image: bytes,
        kind: int = ImageKind.HEAD_PATCH,
        key: bytes | None = None,
        chunk: int | None = None,
        window: int | None = None,
        security_counter: int = 0,
    ) -> UploadState:
        """UPLOAD_BEGIN (resumes if possible) and windowed UPLOAD_CHUNKs with go-back-N; returns the final state.

        `security_counter` is signed with the image (anti-rollback): the board refuses one below its floor."""
        if self.info is None:
            self.hello()
        begin = UploadBegin.for_image(
            image, kind, key if key is not None else self.key, security_counter=security_counter
        )
        st = UploadState.decode(self.request(MsgType.UPLOAD_BEGIN, begin.encode()))
        if st.received and st.prefix_crc32 != zlib.crc32(image[: st.received]):
            begin.flags = UPLOAD_RESTART
            st = UploadState.decode(self.request(MsgType.UPLOAD_BEGIN, begin.encode()))
        chunk = min(chunk or self.max_payload - 4, self.max_payload - 4)
        window = window or (self.info.rx_window if self.info else 1)
        nxt = acked = st.received
        inflight: deque[tuple[int, int]] = deque()  # (seq, end)
        misses = 0
        while acked < len(image):
            while len(inflight) < window and nxt < len(image):
                end = min(nxt + chunk, len(image))
                seq = self._next_seq()
                self.t.write(
                    encode_frame(Frame(MsgType.UPLOAD_CHUNK, seq, struct.pack("<I", nxt) + image[nxt:end]))
                )
                inflight.append((seq, end))
                nxt = end
            fr = self._wait({s for s, _ in inflight}, self.timeout)
            if fr is None or fr.type != MsgType.UPLOAD_CHUNK:
                misses += 1
                if misses > self.retries:
                    raise LinkError(f"upload stalled at {acked} of {len(image)} bytes")
                self.retried += 1
                st = self.upload_status()
                if st.prefix_crc32 != zlib.crc32(image[: st.received]):
                    return (
                        self.upload(image, kind, key, chunk, window, security_counter) if st.received else st
                    )
                nxt = acked = st.received
                inflight.clear()
                continue
            if fr.status != Status.OK:
                raise device_error(MsgType.UPLOAD_CHUNK, fr.status, fr.payload)
            misses = 0
            r = u32(fr.payload, "UPLOAD_CHUNK response")
            idx = next(i for i, (s, _) in enumerate(inflight) if s == fr.seq)
            if r == inflight[idx][1]:
                for _ in range(idx + 1):
                    inflight.popleft()
                acked = r
            else:  # gap or duplicate: go back to where the device is
                inflight.clear()
                nxt = acked = r
        return self.upload_status()

    def verify(self, slot: int) -> bytes:
        return self.request(MsgType.VERIFY, bytes([slot]), timeout=self._short_op)[2:]

    def activate(self, slot: int) -> SlotStatus:
        return SlotStatus.decode(self.request(MsgType.ACTIVATE, bytes([slot])))

    def confirm(self, slot: int, inputs: np.ndarray, expected: np.ndarray, tolerance: int = 0) -> SlotStatus:
        """CONFIRM with golden vectors (int8 inputs [n, in_len], expected int8 logits [n, C]). One raw input too
        large for a frame is staged (STAGE_INPUT, needs STAGED_INPUT) and sent as in_len 0; several such vectors
        do not fit a CONFIRM (check the others with :meth:`infer` first)."""
        c = Confirm(slot, tolerance, np.asarray(inputs, np.int8), np.asarray(expected, np.int8))
        payload = c.encode()
        raw = self.info.raw_input_len if self.info else 0
        big = len(payload) > self.max_payload and len(c.inputs) == 1
        if (
            big and self._stages and c.inputs.shape[1] == raw and raw != self.info_d
        ):  # a raw input, not features
            self.stage_input(c.inputs[0].tobytes())
            payload = Confirm(slot, tolerance, c.inputs[:, :0], c.expected).encode()
        return SlotStatus.decode(self.request(MsgType.CONFIRM, payload, timeout=self._short_op))

    def rollback(self) -> SlotStatus:
        return SlotStatus.decode(self.request(MsgType.ROLLBACK))

    def deploy_head(
        self,
        head: Int8Head,
        golden: np.ndarray,
        key: bytes | None = None,
        security_counter: int = 0,
        signing_key: Ed25519PrivateKey | None = None,
        signed_image: bytes | None = None,
    ) -> SlotStatus:
        """Safe head redeploy: upload (resumable), VERIFY, ACTIVATE (test), CONFIRM with golden features.

        With `signing_key` the patch goes as an Ed25519-signed MCUboot image (its security counter signed in
        it); `signed_image` is such an image signed elsewhere (the field server: the key never leaves it),
        checked here to carry exactly `head`'s patch; else the patch is HMAC-tagged with `key` (default: the
        session's fleet key). On a failed self-test the board is rolled back and DeviceError is raised.
        """
        golden = np.asarray(golden, np.int8)
        image = _image(encode_head_patch(head), signing_key, security_counter)
        if signed_image is not None:
            if parse_image(signed_image).payload != image:
                raise ProtocolError("signed head image: its payload is not the head to deploy")
            image = signed_image
        st = self.upload(image, ImageKind.HEAD_PATCH, key, security_counter=security_counter)
        self.verify(st.slot)
        self.activate(st.slot)
        try:
            return self.confirm(st.slot, golden, head_forward_int8(head, golden))
        except DeviceError:
            self.rollback()
            raise

    def deploy_model(
        self,
        tflite: bytes,
        golden: np.ndarray,
        key: bytes | None = None,
        security_counter: int = 0,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> SlotStatus:
        """Safe full-model redeploy (image kind 2): upload, VERIFY, ACTIVATE (test), CONFIRM, or ROLLBACK.

        `golden`: int8 features [n, D] (checked against the new model's head) or int8 model inputs
        [n, raw_input_len] (checked against the whole new model, computed here with TFLite Micro).
        """
        from fedtiny.model.flatbuffer import read_head  # lazy: the flatbuffer schema

        golden = np.asarray(golden, np.int8)
        golden = golden.reshape(len(golden), -1)
        head = read_head(tflite)
        if golden.shape[1] == head.num_features:
            expected = head_forward_int8(head, golden)
        else:
            from fedtiny.model.runtime import Int8Runner  # lazy: TFLite Micro

            expected = Int8Runner(tflite, "tflm").run_int8(golden)[0]
        if self.info is None:
            self.hello()
        need = 8 + golden.size + expected.size
        if need > self.max_payload:
            raise ProtocolError(
                f"golden vectors take {need} bytes, the device takes at most {self.max_payload}: send fewer"
            )
        st = self.upload(
            _image(tflite, signing_key, security_counter),
            ImageKind.TFLITE,
            key,
            security_counter=security_counter,
        )
        self.verify(st.slot)
        self.activate(st.slot)
        try:
            return self.confirm(st.slot, golden, expected)
        except DeviceError:
            self.rollback()
            raise

    # ----- keys (section 7) -----
    def keys(self) -> KeySet:
        """The board's key counter and the hashes of the public keys it trusts (SIGNED_IMAGES boards)."""
        return KeySet.decode(self.request(MsgType.KEYS))

    def key_change(self, change: KeyChange) -> KeySet:
        """Add or retire one trusted public key with a KeyChange signed by a key the board trusts."""
        return KeySet.decode(self.request(MsgType.KEY_CHANGE, change.encode()))

    def close(self) -> None:
        self.t.close()


def _image(payload: bytes, signing_key: Ed25519PrivateKey | None, security_counter: int) -> bytes:
    """The bytes to upload: the payload itself (HMAC mode) or its signed MCUboot image."""
    return sign_image(payload, signing_key, security_counter) if signing_key is not None else payload
