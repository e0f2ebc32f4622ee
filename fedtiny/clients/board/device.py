"""The virtual board: the device side of docs/protocol.md on top of the on-device spec (fedtiny.ondevice).

`VirtualBoard.feed(bytes) -> bytes` consumes link bytes and returns the bytes the board sends back.
State that a real board keeps in flash lives in `EmulatedFlash`; everything else is RAM and is lost by
`reboot()`. A `PowerCut` from the flash propagates out of `feed`: call `reboot()` (or make a new board
on the same file) to power it up again.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from typing import TYPE_CHECKING

import numpy as np

from fedtiny.clients.board.config import BoardConfig as BoardConfig  # re-exported: imported from here too
from fedtiny.clients.board.flash import SLOT_SIGNED, EmulatedFlash, Meta, PowerCut, SlotMeta
from fedtiny.clients.board.handlers import HANDLERS
from fedtiny.clients.board.replies import Reply
from fedtiny.errors import FedTinyError, ModelError, ProtocolError
from fedtiny.link.blobs import decode_head_patch, encode_head_patch

if TYPE_CHECKING:  # TFLite Micro is imported lazily, only on boards that run a model
    from fedtiny.model.runtime import Int8Runner
from fedtiny.link.frames import FLAG_RESPONSE, PROTOCOL_VERSION, Frame, FrameReader, encode_frame
from fedtiny.link.messages import (
    SS_FELL_BACK,
    SS_REVERTED,
    UPDATE_ID_BLOCK,
    Cap,
    ImageKind,
    MsgType,
    SlotState,
    Status,
)
from fedtiny.link.signing import MAX_TRUSTED_KEYS, SignatureError, parse_image, verify_image
from fedtiny.ondevice import FeatureCache, Int8Head


def default_head(c: int = 10, d: int = 64, seed: int = 0) -> Int8Head:
    """A deterministic factory head for boards created without a model."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (c, d)).astype(np.int8)
    return Int8Head(
        w, np.full(c, 0.01, np.float32), rng.integers(-500, 500, c).astype(np.int32), 0.05, -128, 0.1, 0
    )


class VirtualBoard:
    """One emulated board. `factory_head` provisions slot 0 (CONFIRMED) on a blank flash.

    `model` (a full-integer .tflite) is the board's firmware model: its backbone runs in TFLite Micro on raw
    samples (PUSH_SAMPLES kinds 1 and 2) and the running head is written into it (`write_head`), so TFLM
    inference uses the deployed head. Its head is the factory head unless `factory_head` is given. A full
    .tflite upload (image kind 2) replaces the whole model while its slot runs; head patches always apply to
    the firmware model's backbone. Without `model` the board has no backbone (raw samples: UNSUPPORTED)
    until a full image runs.
    """

    def __init__(
        self,
        cfg: BoardConfig,
        state_file: str | None = None,
        factory_head: Int8Head | None = None,
        cut_at_write: int | None = None,
        model: bytes | None = None,
    ) -> None:
        if cfg.train_arith not in ("float", "fixed", "both"):
            raise ValueError(f"train_arith {cfg.train_arith!r}: expected 'float', 'fixed' or 'both'")
        if cfg.fleet_key and len(cfg.fleet_key) != 32:
            raise ValueError(f"fleet key of {len(cfg.fleet_key)} bytes: a fleet key is exactly 32 bytes")
        if cfg.device_key is not None and len(cfg.device_key) != 32:
            raise ValueError(f"device key of {len(cfg.device_key)} bytes: an update key is exactly 32 bytes")
        if len(cfg.trust_keys) > MAX_TRUSTED_KEYS or any(len(k) != 32 for k in cfg.trust_keys):
            raise ValueError(f"trust keys: at most {MAX_TRUSTED_KEYS} Ed25519 public keys of 32 bytes")
        self.cfg = cfg
        self.flash = EmulatedFlash(state_file, cfg.slot_size, cut_at_write=cut_at_write)
        self.base_model = bytes(model) if model is not None else None
        if self.base_model is not None and factory_head is None:
            from fedtiny.model.flatbuffer import read_head  # lazy: needs the flatbuffer schema

            factory_head = read_head(self.base_model)
        self.factory_head = factory_head or default_head()
        self._runners: dict[tuple[bytes, bytes], Int8Runner] = {}
        self.boots = 0
        self._boot()

    # ----- power -----
    def _boot(self) -> None:
        self.boots += 1
        self.reader = FrameReader(self.cfg.max_payload)
        self.last_key: tuple[int, int, int, int] | None = None
        self.last_resp = b""
        self.pending: tuple[int, bytes] | None = None  # (update_id, encoded UpdateBlob)
        self.acked_id = 0
        self.pushed_total = 0
        self.sample_base = 0  # pushed_total when the cache was last emptied: sample id s is in slot s - base
        self.staged = bytearray()
        self.input_total = 0  # STAGE_INPUT: no staged raw input (a reset loses it)
        self.input_buf = bytearray()
        meta = self.flash.load_meta()
        if meta is None:  # provisioning: the factory head in slot 0, confirmed
            patch = encode_head_patch(self.factory_head)
            meta = Meta()
            self.flash.write(self.flash.slot_base(0), patch)
            sha = hashlib.sha256(patch).digest()
            meta.slots[0] = SlotMeta(SlotState.CONFIRMED, ImageKind.HEAD_PATCH, len(patch), len(patch), sha)
            meta.confirmed = 0
            meta.keys = list(dict.fromkeys(self.cfg.trust_keys))
            self.flash.store_meta(meta)
        elif not meta.keys and self.cfg.trust_keys:  # a board flashed before it had keys: provision them once
            meta.keys = list(dict.fromkeys(self.cfg.trust_keys))
            self.flash.store_meta(meta)
        if meta.testing != 0xFF:  # reset while under test: revert to the confirmed slot
            meta.slots[meta.testing].state = SlotState.VERIFIED
            meta.testing = 0xFF
            meta.reverted |= SS_REVERTED
            self.flash.store_meta(meta)
        self.meta = meta
        self._check_boot_slot()
        # update ids: ids up to meta.uid_reserved may have been issued before; a new block is reserved
        # (persisted) before the first id of it is issued, so ids never repeat across resets
        self.update_counter = self.uid_limit = meta.uid_reserved
        self.active = meta.confirmed
        self.head = self.load_head(self.active) if self.active != 0xFF else self.factory_head
        self.backbone = self.slot_model(self.active) if self.active != 0xFF else self.base_model
        self.cache = FeatureCache(1, self.cfg.cache_capacity, self.head.num_features)

    def slot_intact(self, slot: int) -> bool:
        """The slot's image in flash hashes to the recorded SHA-256 and loads (boot, ACTIVATE, CONFIRM)."""
        s = self.meta.slots[slot]
        if s.received != s.total_len or s.total_len == 0:
            return False
        image = self.image(slot)
        if hashlib.sha256(image).digest() != s.sha256:
            return False
        try:
            self.head_of_image(self.content(slot), s.kind)
        except Exception:
            return False
        return True

    def mark_bad(self, slot: int) -> None:
        """A slot whose image failed (hash, validation): RECEIVING with received = 0 (re-upload to use it). Its
        bytes stay as they are: the rewrite's first chunk (offset 0) erases the slot first (upload_chunk)."""
        s = self.meta.slots[slot]
        s.state, s.received = SlotState.RECEIVING, 0

    def _check_boot_slot(self) -> None:
        """Boot hashes what it loads: a corrupt confirmed image is marked bad and the other VERIFIED slot, if
        intact, becomes the confirmed one (flag FELL_BACK); with none, the built-in factory head runs."""
        m = self.meta
        if m.confirmed == 0xFF or self.slot_intact(m.confirmed):
            return
        self.mark_bad(m.confirmed)
        m.confirmed = 0xFF
        for i, s in enumerate(m.slots):
            if s.state == SlotState.VERIFIED and self.slot_intact(i):
                s.state = SlotState.CONFIRMED
                m.confirmed = i
                break
        m.reverted |= SS_FELL_BACK
        self.flash.store_meta(m)

    def clear_ram(self) -> None:
        """What a reboot into another model loses: the feature cache, a pending update, SET_HEAD staging."""
        self.cache = FeatureCache(1, self.cfg.cache_capacity, self.head.num_features)
        self.sample_base = self.pushed_total  # the cache restarts at slot 0, its sample ids go on
        self.pending = None
        self.staged = bytearray()

    def reboot(self) -> None:
        """Power-cycle: RAM is lost, flash is kept (the power-cut hook is disarmed)."""
        self.flash.cut_at_write = None
        self._boot()

    # ----- model -----
    def image(self, slot: int) -> bytes:
        """The slot's bytes as uploaded (for a signed slot the whole MCUboot image)."""
        s = self.meta.slots[slot]
        return self.flash.read(self.flash.slot_base(slot), s.total_len)

    def content(self, slot: int) -> bytes:
        """The model bytes of a slot: the image itself, or the payload of a signed MCUboot image."""
        image = self.image(slot)
        if self.meta.slots[slot].flags & SLOT_SIGNED:
            return parse_image(image).payload
        return image

    def load_head(self, slot: int) -> Int8Head:
        s = self.meta.slots[slot]
        return self.head_of_image(self.content(slot), s.kind)

    def head_of_image(self, image: bytes, kind: int) -> Int8Head:
        if kind == ImageKind.HEAD_PATCH:
            return decode_head_patch(image, self.shape)
        from fedtiny.model.flatbuffer import read_head  # lazy: needs the flatbuffer schema

        head = read_head(image)
        if (head.num_classes, head.num_features) != self.shape:
            raise ModelError(f"model head is {head.num_classes}x{head.num_features}, board has {self.shape}")
        return head

    def slot_model(self, slot: int) -> bytes | None:
        """The .tflite whose backbone runs with the slot's head: its own image (kind 2) or the firmware model."""
        s = self.meta.slots[slot]
        return self.content(slot) if s.kind == ImageKind.TFLITE else self.base_model

    def running_model(self) -> bytes | None:
        """The model the board runs now: the backbone's .tflite with the running head written in."""
        if self.backbone is None:
            return None
        from fedtiny.model.flatbuffer import write_head

        return write_head(self.backbone, self.head)

    def runner(self) -> Int8Runner | None:
        """TFLite Micro interpreter of the running model (`Int8Runner`), or None without a backbone."""
        model = self.running_model()
        if self.backbone is None or model is None:
            return None
        key = (hashlib.sha256(self.backbone).digest(), encode_head_patch(self.head))
        r = self._runners.get(key)
        if r is None:
            from fedtiny.model.runtime import Int8Runner  # lazy: TFLite Micro

            if len(self._runners) >= 4:
                self._runners.clear()
            r = self._runners[key] = Int8Runner(model, "tflm")
        return r

    @property
    def raw_input_len(self) -> int:
        r = self.runner()
        return int(np.prod(r.input_shape)) if r is not None else 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.factory_head.num_classes, self.factory_head.num_features

    @property
    def capabilities(self) -> int:
        caps = Cap.TRAIN | Cap.EVALUATE | Cap.HEAD_PATCH | Cap.FULL_IMAGE | Cap.SET_HEAD
        caps |= Cap.FLOAT_TRAIN if self.cfg.train_arith in ("float", "both") else 0
        caps |= Cap.FIXED_TRAIN if self.cfg.train_arith in ("fixed", "both") else 0
        caps |= Cap.RAW_SAMPLES if self.backbone is not None else 0
        caps |= Cap.SIGNED_IMAGES if self.meta.keys else 0
        caps |= Cap.DEVICE_KEY if self.cfg.device_key else 0
        caps |= Cap.LABELS  # samples without labels, LABEL, TRAIN flag PSEUDO (docs/ondevice.md §5a)
        caps |= Cap.INFER  # INFER: a host checks the logits and the output of the running head / model
        caps |= Cap.STAGED_INPUT if self.cfg.max_staged_input > 0 else 0  # STAGE_INPUT, kinds 3 and 4
        return caps | (Cap.FLEET_KEY if self.cfg.fleet_key else 0)

    @property
    def update_key(self) -> bytes | None:
        """The key of UpdateBlob tags: this board's own update key, else the fleet key (section 7)."""
        return self.cfg.device_key or self.cfg.fleet_key

    def check_begin_auth(
        self, signed: bool, kind: int, total: int, sha: bytes, tag: bytes, security_counter: int
    ) -> str | None:
        """UPLOAD_BEGIN: None if the image's authentication mode is acceptable (and its HMAC tag valid)."""
        if self.meta.keys:
            return (
                None
                if signed
                else (
                    "this board accepts only Ed25519-signed images (MCUboot format, "
                    "UploadBegin flag SIGNED); HMAC-tagged images are refused"
                )
            )
        if signed:
            return "no public key provisioned: this board accepts only HMAC-tagged images"
        return self.check_tag(kind, total, sha, tag, security_counter)

    def check_signature(self, slot: int) -> tuple[str | None, int]:
        """VERIFY of a signed slot: (None, signed security counter) if the MCUboot image verifies with a trusted
        key, else (reason, 0)."""
        if not self.meta.keys:
            return "no public key provisioned: this board accepts only HMAC-tagged images", 0
        try:
            im = verify_image(self.image(slot), self.meta.keys)
        except SignatureError as e:
            return str(e), 0
        return None, im.security_counter

    def running_kind(self) -> int:
        """Image kind of the running slot (the factory head when nothing is confirmed)."""
        return self.meta.slots[self.active].kind if self.active != 0xFF else ImageKind.HEAD_PATCH

    def check_tag(
        self, kind: int, total: int, sha: bytes, tag: bytes, security_counter: int = 0
    ) -> str | None:
        """None if the image tag is valid, else the reason."""
        from fedtiny.link.messages import image_tag

        if not self.cfg.fleet_key:
            return "no fleet key provisioned"
        if tag == bytes(32):
            return "unsigned image"
        if not hmac.compare_digest(tag, image_tag(self.cfg.fleet_key, kind, total, sha, security_counter)):
            return "bad image HMAC tag"
        return None

    def persist(self) -> None:
        self.flash.store_meta(self.meta)

    def prefix_crc(self, slot: int) -> int:
        return zlib.crc32(self.flash.read(self.flash.slot_base(slot), self.meta.slots[slot].received))

    # ----- link -----
    def feed(self, data: bytes, reader: FrameReader | None = None) -> bytes:
        """Consume link bytes; return the response bytes (PowerCut propagates). `reader`: the deframer of
        one host connection (the server gives each TCP client its own), default the board's link."""
        out = bytearray()
        for fr in (reader or self.reader).feed(data):
            out += self.handle(fr)
        return bytes(out)

    def handle(self, fr: Frame) -> bytes:
        if fr.is_response:
            return b""
        key = (fr.version, fr.seq, fr.type, zlib.crc32(fr.payload))
        if key == self.last_key:
            return self.last_resp
        if fr.version != PROTOCOL_VERSION:
            reply = Reply(Status.BAD_VERSION, f"version {fr.version} not supported".encode())
        elif fr.type not in HANDLERS:
            reply = Reply(Status.UNKNOWN_TYPE, f"type 0x{fr.type:02x}".encode())
        else:
            try:
                reply = HANDLERS[fr.type](self, fr.payload)
            except PowerCut:
                raise
            except (ProtocolError, FedTinyError) as e:
                reply = Reply(Status.MALFORMED, str(e).encode()[:200])
            except Exception as e:
                reply = Reply(Status.INTERNAL, f"{type(e).__name__}: {e}".encode()[:200])
        wire = encode_frame(Frame(fr.type, fr.seq, reply.payload, FLAG_RESPONSE, reply.status))
        # the retry cache keeps the last *executed* request: refusals that change nothing (BAD_VERSION,
        # UNKNOWN_TYPE, MALFORMED) and UPLOAD_CHUNK (idempotent by offset) neither use nor replace it
        if fr.type != MsgType.UPLOAD_CHUNK and reply.status not in NOT_CACHED:
            self.last_key, self.last_resp = key, wire
        if reply.after is not None:
            reply.after()
        return wire

    def new_update_id(self) -> int:
        """The next update id: strictly increasing across resets (a block is reserved in flash first)."""
        if self.update_counter >= self.uid_limit:
            if self.uid_limit > 0xFFFFFFFF - UPDATE_ID_BLOCK:
                raise FedTinyError("update ids exhausted")
            self.meta.uid_reserved = self.uid_limit + UPDATE_ID_BLOCK
            self.persist()
            self.uid_limit = self.meta.uid_reserved
        self.update_counter += 1
        return self.update_counter


NOT_CACHED = (Status.BAD_VERSION, Status.UNKNOWN_TYPE, Status.MALFORMED)
