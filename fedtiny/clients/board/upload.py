"""Upload and slot handlers of the virtual board (docs/protocol.md sections 5 and 6)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from fedtiny.clients.board.api import Board
from fedtiny.clients.board.flash import SLOT_SIGNED, SlotMeta
from fedtiny.clients.board.replies import Reply, check_fits_backbone, err, slot_status, staged_input
from fedtiny.clients.board.tflite_check import ModelTooLarge, UnsupportedModel, check_model
from fedtiny.errors import ModelError, ProtocolError
from fedtiny.link.messages import (
    ANY_SLOT,
    UPLOAD_RESTART,
    UPLOAD_SIGNED,
    Confirm,
    ImageKind,
    SampleKind,
    SlotState,
    Status,
    UploadBegin,
    UploadState,
    u8,
)
from fedtiny.ondevice import Int8Head, head_forward_int8


def upload_slot(b: Board) -> int:
    """The slot uploads go to: the lowest-numbered slot that is not CONFIRMED."""
    return next(i for i, s in enumerate(b.meta.slots) if i != b.meta.confirmed)


def _state(b: Board, slot: int, resumed: int = 0) -> bytes:
    s = b.meta.slots[slot]
    return UploadState(slot, s.state, resumed, 0, s.total_len, s.received, b.prefix_crc(slot)).encode()


def upload_begin(b: Board, p: bytes) -> Reply:
    ub = UploadBegin.decode(p)
    if ub.kind not in (ImageKind.HEAD_PATCH, ImageKind.TFLITE):
        raise ProtocolError(f"image kind {ub.kind}")
    target = upload_slot(b)
    if ub.slot not in (ANY_SLOT, target):
        return err(Status.BAD_STATE, f"slot {ub.slot} is not the upload slot {target}")
    s = b.meta.slots[target]
    if s.state == SlotState.TESTING:
        return err(Status.BAD_STATE, f"slot {target} is under test: CONFIRM or ROLLBACK first")
    if not 0 < ub.total_len <= b.cfg.slot_size:
        return err(Status.NO_SPACE, f"image of {ub.total_len} bytes, slot holds {b.cfg.slot_size}")
    signed = bool(ub.flags & UPLOAD_SIGNED)
    why = b.check_begin_auth(signed, ub.kind, ub.total_len, ub.sha256, ub.tag, ub.security_counter)
    if why:
        return err(Status.AUTH_FAILED, why)
    if ub.security_counter < b.meta.sec_floor:
        return err(
            Status.DOWNGRADE, f"security counter {ub.security_counter} < the board's {b.meta.sec_floor}"
        )
    flags = SLOT_SIGNED if signed else 0
    same = (s.kind, s.total_len, s.sha256, s.security_counter, s.flags) == (
        ub.kind,
        ub.total_len,
        ub.sha256,
        ub.security_counter,
        flags,
    )
    if same and s.state in (SlotState.RECEIVING, SlotState.VERIFIED) and not ub.flags & UPLOAD_RESTART:
        return Reply(payload=_state(b, target, resumed=1))
    b.meta.slots[target] = SlotMeta(SlotState.EMPTY, 0, 0, 0)
    b.persist()  # invalidate before erasing: a cut mid-erase must not look resumable
    b.flash.erase_slot(target)
    b.meta.slots[target] = SlotMeta(
        SlotState.RECEIVING,
        ub.kind,
        ub.total_len,
        0,
        ub.sha256,
        bytes(32) if signed else ub.tag,
        ub.security_counter,
        flags,
    )
    b.persist()
    return Reply(payload=_state(b, target))


def upload_chunk(b: Board, p: bytes) -> Reply:
    if len(p) < 4:
        raise ProtocolError("UPLOAD_CHUNK needs an offset")
    (off,) = struct.unpack_from("<I", p)
    data = p[4:]
    target = upload_slot(b)
    s = b.meta.slots[target]
    if s.state == SlotState.VERIFIED:
        return Reply(payload=struct.pack("<I", s.total_len))
    if s.state != SlotState.RECEIVING:
        return err(Status.BAD_STATE, f"slot {target} is not receiving (UPLOAD_BEGIN first)")
    if off + len(data) > s.total_len:
        raise ProtocolError(f"chunk [{off}, {off + len(data)}) beyond image of {s.total_len}")
    if off == s.received and data:
        base = b.flash.slot_base(target)
        if off == 0 and not b.flash.blank(base, s.total_len):
            # a rewrite from 0 (a slot marked bad, or a cut before the first `received` was persisted): flash only
            # clears bits, so what the slot holds (the bad image, a torn chunk) is erased first; a cut anywhere
            # here leaves received = 0 and the next chunk at 0 checks again (docs/protocol.md section 5)
            b.flash.erase_slot(target)
        b.flash.program(base + off, data)
        s.received += len(data)
        b.persist()
    return Reply(payload=struct.pack("<I", s.received))


def upload_status(b: Board, p: bytes) -> Reply:
    slot = u8(p, "UPLOAD_STATUS")
    slot = upload_slot(b) if slot == ANY_SLOT else slot
    if slot >= len(b.meta.slots):
        raise ProtocolError(f"slot {slot}")
    return Reply(payload=_state(b, slot))


def _slot_arg(b: Board, p: bytes, what: str) -> int:
    slot = u8(p, what)
    if slot >= len(b.meta.slots):
        raise ProtocolError(f"slot {slot} of {len(b.meta.slots)}")
    return slot


def verify(b: Board, p: bytes) -> Reply:
    """VERIFY hashes the slot in flash (every state). A completed upload that fails (hash, tag, security
    counter, image content) is marked bad: RECEIVING with received = 0. An incomplete upload: BAD_STATE,
    nothing changes (it can resume). A corrupt VERIFIED slot is marked bad; a corrupt CONFIRMED/TESTING slot
    answers HASH_MISMATCH and keeps its state (the copy in RAM runs; the next boot falls back)."""
    slot = _slot_arg(b, p, "VERIFY")
    s = b.meta.slots[slot]
    if s.state == SlotState.EMPTY:
        return err(Status.BAD_STATE, f"slot {slot} is empty")
    if s.state == SlotState.RECEIVING and s.received != s.total_len:
        return err(Status.BAD_STATE, f"slot {slot} has {s.received} of {s.total_len} bytes")
    image = b.image(slot)
    if hashlib.sha256(image).digest() != s.sha256:
        return _verify_failed(
            b, slot, Status.HASH_MISMATCH, "sha256 of the image in flash differs from the declared one"
        )
    if s.state == SlotState.RECEIVING:
        if s.flags & SLOT_SIGNED:  # Ed25519 over the image's SHA-256; the security counter is the signed one
            why, signed_counter = b.check_signature(slot)
            if not why and signed_counter != s.security_counter:
                why = (
                    f"declared security counter {s.security_counter} differs from the signed {signed_counter}"
                )
        elif b.meta.keys:  # keys provisioned after BEGIN (a KEY_CHANGE cannot do that, a re-provisioning can)
            why = "this board accepts only Ed25519-signed images (MCUboot format, UploadBegin flag SIGNED)"
        else:
            why = b.check_tag(s.kind, s.total_len, s.sha256, s.tag, s.security_counter)
        if why:
            return _verify_failed(b, slot, Status.AUTH_FAILED, why)
        if s.security_counter < b.meta.sec_floor:
            return _verify_failed(
                b,
                slot,
                Status.DOWNGRADE,
                f"security counter {s.security_counter} < the board's {b.meta.sec_floor}",
            )
        try:
            content = b.content(slot)
            if s.kind == ImageKind.TFLITE:
                check_model(content)  # bounds-checked parse + a trial run in a child process
            head = b.head_of_image(content, s.kind)
            if s.kind == ImageKind.HEAD_PATCH:
                check_fits_backbone(b, head)
        except ModelError as e:
            return _verify_failed(b, slot, Status.SHAPE_MISMATCH, str(e))
        # an op or a limit this board lacks: the statuses of the C board's interpreter (protocol.md section 5)
        except UnsupportedModel as e:
            return _verify_failed(b, slot, Status.UNSUPPORTED, f"model: {e}")
        except ModelTooLarge as e:
            return _verify_failed(b, slot, Status.NO_SPACE, f"model: {e}")
        except Exception as e:
            return _verify_failed(b, slot, Status.MALFORMED, f"image does not parse: {e}")
        s.state = SlotState.VERIFIED
        b.persist()
    return Reply(payload=bytes([slot, s.state]) + s.sha256)


def _verify_failed(b: Board, slot: int, status: int, reason: str) -> Reply:
    s = b.meta.slots[slot]
    if s.state in (SlotState.RECEIVING, SlotState.VERIFIED):
        b.mark_bad(slot)
        b.persist()
    return err(status, reason)


def activate(b: Board, p: bytes) -> Reply:
    slot = _slot_arg(b, p, "ACTIVATE")
    s = b.meta.slots[slot]
    if b.meta.testing == slot:
        return Reply(payload=slot_status(b))
    if s.state != SlotState.VERIFIED or b.meta.testing != 0xFF:
        return err(Status.BAD_STATE, f"slot {slot} is {SlotState(s.state).name}, another may be under test")
    if s.security_counter < b.meta.sec_floor:
        return err(
            Status.DOWNGRADE, f"security counter {s.security_counter} < the board's {b.meta.sec_floor}"
        )
    if not b.slot_intact(slot):
        b.mark_bad(slot)
        b.persist()
        return err(Status.HASH_MISMATCH, f"slot {slot}: the image in flash does not match its sha256")
    head = b.load_head(slot)
    full = s.kind == ImageKind.TFLITE or b.running_kind() == ImageKind.TFLITE
    s.state = SlotState.TESTING
    b.meta.testing = slot
    b.persist()
    _run(b, slot, head, full)
    return Reply(payload=slot_status(b))


def _run(b: Board, slot: int, head: Int8Head, full: bool) -> None:
    """Switch the running model to a slot. A full image is a reboot into it: RAM (cache, pending update) is lost,
    and cached features of another backbone would be meaningless anyway."""
    b.active, b.head, b.backbone = slot, head, b.slot_model(slot)
    if full:
        b.clear_ram()


def confirm(b: Board, p: bytes) -> Reply:
    """The golden vectors run on the image under test as it is in flash (its head, and for raw inputs its
    model), not on whatever SET_HEAD put in RAM since; on success that image runs."""
    c = Confirm.decode(p)
    if c.slot >= len(b.meta.slots):
        raise ProtocolError(f"slot {c.slot}")
    if len(c.inputs) == 0:
        raise ProtocolError("CONFIRM needs at least one golden vector")
    if c.slot == b.meta.confirmed and b.meta.testing == 0xFF:
        return Reply(payload=slot_status(b))
    if b.meta.testing != c.slot:
        return err(Status.BAD_STATE, f"slot {c.slot} is not under test")
    cc, d = b.shape
    s = b.meta.slots[c.slot]
    raw = b.raw_input_len  # the TESTING slot is the running one: its backbone
    staged = c.inputs.shape[1] == 0  # in_len 0: every vector's input is the staged input (STAGE_INPUT)
    can_stage = bool(raw) and b.cfg.max_staged_input > 0
    if c.expected.shape[1] != cc or (not can_stage if staged else c.inputs.shape[1] not in (d, raw or d)):
        extra = f" or {raw} int8 model inputs" if raw else ""
        return err(Status.UNSUPPORTED, f"golden vectors must be {d} int8 features{extra} -> {cc} int8 logits")
    inputs = c.inputs
    if staged:
        x = staged_input(b, SampleKind.STAGED_INT8, raw)
        if x is None:
            return err(Status.BAD_STATE, f"no staged input of {raw} int8 elements (STAGE_INPUT)")
        inputs = np.repeat(x[None], len(c.inputs), axis=0)
    if not b.slot_intact(c.slot):
        return err(Status.HASH_MISMATCH, f"slot {c.slot}: the image in flash does not match its sha256")
    head = b.load_head(c.slot)
    b.head = head  # the image under test runs (a SET_HEAD since ACTIVATE is dropped)
    if not staged and inputs.shape[1] == d:  # the slot's head
        out = head_forward_int8(head, inputs).astype(np.int32)
    else:  # the slot's whole model in TFLite Micro
        runner = b.runner()
        if runner is None:
            return err(
                Status.SHAPE_MISMATCH,
                f"slot {c.slot}: raw golden inputs need a model, this slot has a head only",
            )
        out = runner.run_int8(inputs)[0].astype(np.int32)
    diff = np.abs(out - c.expected.astype(np.int32))
    if diff.max() > c.tolerance:
        i, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
        return err(
            Status.SELFTEST_FAILED,
            f"vector {i} channel {j}: got {out[i, j]}, expected {int(c.expected[i, j])}",
        )
    m = b.meta
    if m.confirmed != 0xFF:
        m.slots[m.confirmed].state = SlotState.VERIFIED
    s.state = SlotState.CONFIRMED
    m.confirmed, m.testing = c.slot, 0xFF
    m.sec_floor = max(m.sec_floor, s.security_counter)  # anti-rollback: the floor rises with the commit
    b.persist()
    return Reply(payload=slot_status(b))


def rollback(b: Board, p: bytes) -> Reply:
    if p:
        raise ProtocolError("ROLLBACK takes no payload")
    m = b.meta
    if m.testing != 0xFF:
        was_full = b.running_kind() == ImageKind.TFLITE
        m.slots[m.testing].state = SlotState.VERIFIED
        m.testing = 0xFF
        b.persist()
        if m.confirmed == 0xFF:  # nothing confirmed (both slots went bad): the firmware's factory head
            b.active, b.head, b.backbone = 0xFF, b.factory_head, b.base_model
            if was_full:
                b.clear_ram()
        else:
            full = was_full or m.slots[m.confirmed].kind == ImageKind.TFLITE
            _run(b, m.confirmed, b.load_head(m.confirmed), full)
    return Reply(payload=slot_status(b))
