"""Request handlers of the virtual board, one per message type (docs/protocol.md section 4)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import numpy as np

from fedtiny.clients.board.api import Board
from fedtiny.clients.board.keys import key_change, keys
from fedtiny.clients.board.replies import Reply, check_fits_backbone, err, slot_status, staged_input
from fedtiny.clients.board.upload import (
    activate,
    confirm,
    rollback,
    upload_begin,
    upload_chunk,
    upload_status,
    verify,
)
from fedtiny.errors import ModelError, ProtocolError
from fedtiny.link.blobs import UpdateBlob, decode_head_patch, encode_head_patch, head_patch_size
from fedtiny.link.messages import (
    HELLO_EXT,
    INFER_RESULT_HEADER,
    STAGED_KINDS,
    TRAIN_FIXED,
    TRAIN_MAX_DECAY,
    TRAIN_MAX_EPOCHS,
    TRAIN_MAX_LR,
    TRAIN_MAX_WORK,
    TRAIN_PSEUDO,
    BlobRead,
    Cap,
    EvalResult,
    HelloInfo,
    InferOutput,
    InferRequest,
    InferResult,
    LabelRequest,
    LabelResult,
    MsgType,
    SampleKind,
    Samples,
    Status,
    TrainRequest,
    TrainResult,
    u8,
    u32,
)
from fedtiny.model.info import min_arena_bytes
from fedtiny.ondevice import (
    TrainConfig,
    TrainJob,
    dequantize_head,
    train_heads,
    train_heads_fixed,
)
from fedtiny.ondevice.evaluate import evaluate_head
from fedtiny.ondevice.head import head_forward_int8
from fedtiny.ondevice.pseudo import UNLABELLED, training_set

_ARENAS: dict[bytes, int] = {}  # sha256 of a backbone .tflite -> TFLite Micro's smallest arena for it


def arena_bytes(b: Board) -> int:
    """The arena the running model needs: TFLite Micro's smallest for the board's backbone model (the head's values
    change no tensor size), 0 without one. Computed once per model: it takes a dozen interpreter builds."""
    if b.backbone is None:
        return 0
    key = hashlib.sha256(b.backbone).digest()
    if key not in _ARENAS:
        _ARENAS[key] = max(0, min_arena_bytes(b.backbone))
    return _ARENAS[key]


def hello(b: Board, p: bytes) -> Reply:
    if p not in (b"", bytes([HELLO_EXT])):
        raise ProtocolError(f"HELLO takes no payload or the byte {HELLO_EXT} (extension)")
    c, d = b.shape
    info = HelloInfo(
        1,
        b.flash.n_slots,
        b.cfg.max_payload,
        b.cfg.device_id,
        int(b.capabilities),
        c,
        d,
        b.cfg.cache_capacity,
        int(b.cache.count[0]),
        b.cfg.slot_size,
        b.raw_input_len,
        b.cfg.rx_window,
        b.active,
        # at most 64 bytes, as the C board sends (docs/protocol.md HelloInfo)
        b.cfg.board_name.encode()[:64].decode(errors="ignore"),
        b.cfg.fw_version,
        arena_bytes(b) if p else None,
    )
    return Reply(payload=info.encode())


def status(b: Board, p: bytes) -> Reply:
    if p:
        raise ProtocolError("STATUS takes no payload")
    out = slot_status(b)
    b.meta.reverted = 0  # reported once (RAM copy; persisted with the next metadata write)
    return Reply(payload=out)


def reset(b: Board, p: bytes) -> Reply:
    if u8(p, "RESET") != 0:
        raise ProtocolError("RESET mode must be 0")
    return Reply(after=b.reboot)


def _page(blob: bytes, p: bytes, room: int) -> bytes:
    req = BlobRead.decode(p)
    if req.offset > len(blob):
        raise ProtocolError(f"offset {req.offset} beyond object of {len(blob)} bytes")
    n = min(req.max_len, len(blob) - req.offset, room)
    return struct.pack("<I", len(blob)) + blob[req.offset : req.offset + n]


def get_head(b: Board, p: bytes) -> Reply:
    return Reply(payload=_page(encode_head_patch(b.head), p, b.cfg.max_payload - 4))


def set_head(b: Board, p: bytes) -> Reply:
    if len(p) < 8:
        raise ProtocolError("SET_HEAD needs total and offset")
    total, off = struct.unpack_from("<II", p)
    data = p[8:]
    want = head_patch_size(*b.shape)
    if total != want:  # nothing else can complete: refused before anything is staged
        c, d = b.shape
        return err(Status.SHAPE_MISMATCH, f"head patch of {total} bytes, this board's {c}x{d} head is {want}")
    if off + len(data) > total:
        raise ProtocolError("SET_HEAD data beyond total")
    if off != 0 and off != len(b.staged):
        return err(Status.BAD_OFFSET, f"offset {off}, staged {len(b.staged)}")
    if off == 0:
        b.staged = bytearray()
    b.staged += data
    if len(b.staged) == total:
        staged, b.staged = bytes(b.staged), bytearray()
        try:
            head = decode_head_patch(staged, b.shape)
            check_fits_backbone(b, head)
        except ModelError as e:
            return err(Status.SHAPE_MISMATCH, str(e))
        b.head = head
    return Reply(payload=struct.pack("<I", len(b.staged)))


def _no_staging() -> Reply:
    return err(Status.UNSUPPORTED, "this board stages no raw input (max_staged_input 0)")


def stage_input(b: Board, p: bytes) -> Reply:
    """STAGE_INPUT (docs/protocol.md "STAGE_INPUT"): one piece of a raw input larger than a frame."""
    if len(p) < 8:
        raise ProtocolError("STAGE_INPUT needs total and offset")
    total, off = struct.unpack_from("<II", p)
    data = p[8:]
    cap = b.cfg.max_staged_input
    if cap <= 0:
        return _no_staging()
    if not 1 <= total <= cap:
        return err(Status.NO_SPACE, f"staged input of {total} bytes: this board stages 1 to {cap}")
    if off + len(data) > total:
        raise ProtocolError("STAGE_INPUT data beyond total")
    have = len(b.input_buf) if total == b.input_total else 0  # the staged length for this total
    if off != 0 and off != have:
        return err(Status.BAD_OFFSET, f"staged {have}")
    if off == 0:
        b.input_total, b.input_buf = total, bytearray()
    b.input_buf += data
    return Reply(payload=struct.pack("<I", len(b.input_buf)))


def push_samples(b: Board, p: bytes) -> Reply:
    s = Samples.decode(p)
    c, d = b.shape
    if s.kind not in (SampleKind.FEATURES, SampleKind.RAW_INT8, SampleKind.RAW_F32, *STAGED_KINDS):
        raise ProtocolError(f"sample kind {s.kind}")
    staged = s.kind in STAGED_KINDS
    if staged and len(s.labels) > 1:
        raise ProtocolError("the staged input is one sample (n <= 1)")
    if staged and b.cfg.max_staged_input <= 0:
        return _no_staging()
    runner = b.runner() if s.kind != SampleKind.FEATURES else None
    if s.kind != SampleKind.FEATURES and runner is None:
        return err(Status.UNSUPPORTED, "this board has no backbone: push int8 features (kind 0)")
    want = d if runner is None else int(np.prod(runner.input_shape))
    if s.dim != want:
        what = "features" if runner is None else "raw samples"
        return err(Status.SHAPE_MISMATCH, f"{what} of {s.dim}, expected {want}")
    bad = (s.labels >= c) & (s.labels != UNLABELLED)
    if bad.any():  # a class, or UNLABELLED: no label (a late one may come by LABEL)
        raise ProtocolError(f"label {int(s.labels[np.argmax(bad)])} >= {c} classes (0xFFFF: no label)")
    if staged:  # kinds 3, 4: the staged input as kind 1, 2
        if len(s.labels):
            x = staged_input(b, s.kind, s.dim)
            if x is None:
                return err(Status.BAD_STATE, f"no staged input of {s.dim} elements of kind {s.kind}")
            s.data = x[None]
        else:
            s.data = np.zeros((0, s.dim), Samples.dtype(s.kind))
        s.kind = SampleKind.RAW_INT8 if s.kind == SampleKind.STAGED_INT8 else SampleKind.RAW_F32
    if s.kind == SampleKind.RAW_F32 and len(s.labels):  # as the C board: refused whole, nothing cached
        bad = ~np.isfinite(s.data).all(axis=1)
        if bad.any():
            raise ProtocolError(f"raw float32 sample {int(np.argmax(bad))} holds a NaN or an infinity")
    if runner is not None and len(s.labels):  # the backbone in TFLite Micro: one invoke per sample
        xq = s.data if s.kind == SampleKind.RAW_INT8 else runner.quantize_input(s.data)
        s.data = runner.run_int8(xq)[1]
        if s.data.shape[1] != d:
            return err(Status.INTERNAL, f"backbone gives {s.data.shape[1]} features, head input is {d}")
    if s.flags & 1:
        b.cache.count[:] = 0
        b.cache.head[:] = 0
        b.sample_base = b.pushed_total  # sample ids: the first of this request goes to slot 0
    if len(s.labels):  # the cache keeps a missing label as -1 (docs/ondevice.md §5a)
        b.cache.push(s.data[None], np.where(s.labels == UNLABELLED, -1, s.labels)[None])
    b.pushed_total += len(s.labels)
    return Reply(payload=struct.pack("<II", int(b.cache.count[0]), b.pushed_total & 0xFFFFFFFF))


def infer(b: Board, p: bytes) -> Reply:
    """INFER (docs/protocol.md "InferRequest"): one input through the running head (kind 0) or the running model
    (kinds 1, 2; TFLite Micro), its int8 logits and the model's output; changes nothing."""
    r = InferRequest.decode(p)
    c, d = b.shape
    if r.kind not in (SampleKind.FEATURES, SampleKind.RAW_INT8, SampleKind.RAW_F32, *STAGED_KINDS):
        raise ProtocolError(f"input kind {r.kind}")
    staged = r.kind in STAGED_KINDS
    if staged and b.cfg.max_staged_input <= 0:
        return _no_staging()
    runner = b.runner()
    if r.kind != SampleKind.FEATURES and runner is None:
        return err(Status.UNSUPPORTED, "this board has no backbone: send int8 features (kind 0)")
    want = d if r.kind == SampleKind.FEATURES else int(np.prod(runner.input_shape)) if runner else 0
    if r.dim != want:
        what = "features" if r.kind == SampleKind.FEATURES else "raw input"
        return err(Status.SHAPE_MISMATCH, f"{what} of {r.dim}, expected {want}")
    tail = None
    if runner is not None:
        from fedtiny.model.flatbuffer import read_tail

        try:  # the ops after the head, with the running model's quantization (docs/ondevice.md §1b)
            tail = read_tail(b.running_model() or b"")
            for op in tail.ops:  # TFLite Micro refuses a SOFTMAX whose beta * input scale is too small
                if op.kind == "SOFTMAX":
                    op.softmax_params()
        except ModelError as e:
            return err(Status.UNSUPPORTED, f"the model's ops after the head: {e}")
    out_type = InferOutput.NONE
    if tail is not None:
        out_type = (
            InferOutput.FLOAT32 if any(op.kind == "DEQUANTIZE" for op in tail.ops) else InferOutput.INT8
        )
    size = (
        INFER_RESULT_HEADER.size
        + c
        + (0 if tail is None else c * (4 if out_type == InferOutput.FLOAT32 else 1))
    )
    if size > b.cfg.max_payload:
        return err(Status.NO_SPACE, f"the answer of {size} bytes exceeds max_payload {b.cfg.max_payload}")
    if staged:  # kinds 3, 4: the staged input as kind 1, 2
        x = staged_input(b, r.kind, r.dim)
        if x is None:
            return err(Status.BAD_STATE, f"no staged input of {r.dim} elements of kind {r.kind}")
        r = InferRequest(SampleKind.RAW_INT8 if r.kind == SampleKind.STAGED_INT8 else SampleKind.RAW_F32, x)
    if r.kind == SampleKind.RAW_F32 and not np.isfinite(r.data).all():
        raise ProtocolError("raw float32 input holds a NaN or an infinity")
    if r.kind == SampleKind.FEATURES:
        logits = head_forward_int8(b.head, np.asarray(r.data, np.int8)[None])[0]
        out = np.zeros(0, np.int8) if tail is None else np.asarray(tail.apply(logits[None])[0])
    else:
        assert runner is not None
        xq = r.data if r.kind == SampleKind.RAW_INT8 else runner.quantize_input(r.data)
        if runner.float_input and r.kind == SampleKind.RAW_INT8:
            xq = runner.prepare_inputs(r.data)
        logits = runner.run_int8(xq[None])[0][0]
        out = np.asarray(runner.final[0]).reshape(-1)
    return Reply(payload=InferResult(logits, out_type, out).encode())


def train(b: Board, p: bytes) -> Reply:
    r = TrainRequest.decode(p)
    if b.pending is not None:
        return err(Status.UPDATE_PENDING, f"update {b.pending[0]} not acknowledged")
    n = int(b.cache.count[0])
    if n == 0:
        return err(Status.CACHE_EMPTY, "no cached samples")
    why = train_range_error(r, n)
    if why:
        raise ProtocolError(why)
    try:
        cfg = TrainConfig(r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.prox_mu)
    except ModelError as e:
        raise ProtocolError(str(e)) from None
    if r.flags & ~(TRAIN_FIXED | TRAIN_PSEUDO):
        return err(Status.UNSUPPORTED, f"TRAIN flags 0x{r.flags:x}: unknown bits")
    caps = b.capabilities
    if r.fixed:
        if not caps & Cap.FIXED_TRAIN:
            return err(Status.UNSUPPORTED, "this board has no fixed-point training (CAP_FIXED_TRAIN)")
        if r.momentum or r.weight_decay or r.prox_mu:
            return err(
                Status.UNSUPPORTED,
                "fixed-point training is plain SGD: momentum, weight_decay and prox_mu must be 0",
            )
        trainer = train_heads_fixed
    else:
        if not caps & Cap.FLOAT_TRAIN:
            return err(
                Status.UNSUPPORTED,
                "this board trains fixed-point only (CAP_FIXED_TRAIN): set TRAIN flag FIXED",
            )
        trainer = train_heads
    # the training set (docs/ondevice.md §5a): labelled slots, with PSEUDO also the confident unlabelled ones
    ts = training_set(
        b.head,
        b.cache.features[0],
        b.cache.labels[0],
        n,
        r.pseudo_margin if r.pseudo else None,
        r.pseudo_weight,
    )
    n = len(ts.slots)
    if n == 0:
        return err(Status.CACHE_EMPTY, "no labelled sample")
    fh = dequantize_head(b.head)
    with np.errstate(all="ignore"):  # a diverging run is refused below, not warned about
        res = trainer(
            fh.weights,
            fh.bias,
            b.cache.features[0, ts.slots][None],  # the kept slots renumbered 0 .. n-1, in slot order
            ts.labels[None],
            np.array([n]),
            TrainJob(
                cfg,
                input_scale=b.head.input_scale,
                input_zero_point=b.head.input_zero_point,
                seed=r.seed,
                round_=r.round,
                device_ids=np.array([b.cfg.device_id]),
                sample_weights=ts.weights[None] if ts.pseudo.any() else None,
            ),
        )
    if not (np.isfinite(res.weights).all() and np.isfinite(res.bias).all() and np.isfinite(res.loss).all()):
        raise ProtocolError(
            "training diverged (non-finite weights or loss): lower lr / weight_decay / prox_mu"
        )
    uid = b.new_update_id()
    blob = UpdateBlob(b.cfg.device_id, uid, r.round, n, float(res.loss[0]), res.weights[0], res.bias[0])
    b.pending = (uid, blob.sign(b.update_key).encode())  # per-device key if provisioned, else the fleet key
    return Reply(payload=TrainResult(uid, n, float(res.loss[0])).encode())


def train_range_error(r: TrainRequest, cached: int) -> str | None:
    """The documented TrainRequest ranges (docs/protocol.md), or None if the request is within them."""
    import math

    if not 1 <= r.epochs <= TRAIN_MAX_EPOCHS or r.batch_size < 1:
        return f"epochs must be 1..{TRAIN_MAX_EPOCHS} and batch_size >= 1"
    if r.epochs * cached > TRAIN_MAX_WORK:
        return f"epochs x cached samples = {r.epochs * cached} > {TRAIN_MAX_WORK} (work bound of one TRAIN)"
    vals = (r.lr, r.momentum, r.weight_decay, r.prox_mu)
    if not all(math.isfinite(v) for v in vals):
        return "lr, momentum, weight_decay and prox_mu must be finite"
    if r.pseudo and not math.isfinite(r.pseudo_margin):
        return "pseudo_margin must be finite"
    if r.pseudo and not (math.isfinite(r.pseudo_weight) and 0 < r.pseudo_weight <= 1):
        return "pseudo_weight must be in (0, 1]"
    if not (
        0 < r.lr <= TRAIN_MAX_LR
        and 0 <= r.momentum < 1
        and 0 <= r.weight_decay <= TRAIN_MAX_DECAY
        and 0 <= r.prox_mu <= TRAIN_MAX_DECAY
    ):
        return (
            f"lr must be in (0, {TRAIN_MAX_LR:g}], momentum in [0, 1), weight_decay and prox_mu in "
            f"[0, {TRAIN_MAX_DECAY:g}]"
        )
    return None


def read_update(b: Board, p: bytes) -> Reply:
    if b.pending is None:
        BlobRead.decode(p)
        return err(Status.NO_UPDATE, "no pending update")
    uid, blob = b.pending
    return Reply(payload=struct.pack("<I", uid) + _page(blob, p, b.cfg.max_payload - 8))


def update_ack(b: Board, p: bytes) -> Reply:
    uid = u32(p, "UPDATE_ACK")
    if b.pending is not None and b.pending[0] == uid:
        b.pending, b.acked_id = None, uid
        return Reply()
    if uid == b.acked_id and uid != 0:
        return Reply()
    return err(Status.NO_UPDATE, f"update {uid} is not pending")


def evaluate(b: Board, p: bytes) -> Reply:
    max_n = u32(p, "EVALUATE")
    feats, labels = b.cache.device(0)
    if max_n:
        feats, labels = feats[:max_n], labels[:max_n]
    if len(labels) == 0:
        return err(Status.CACHE_EMPTY, "no cached samples")
    known = labels >= 0  # slots without a label are skipped; none left: n = 0, accuracy and loss 0
    if not known.any():
        return Reply(payload=EvalResult(0, 0.0, 0.0).encode())
    acc, loss = evaluate_head(b.head, feats[known], labels[known])
    return Reply(payload=EvalResult(int(known.sum()), acc, loss).encode())


def label(b: Board, p: bytes) -> Reply:
    """LABEL: late labels by sample id (docs/protocol.md "LabelRequest"); ids no longer cached are skipped."""
    req = LabelRequest.decode(p)
    c = b.shape[0]
    bad = (req.labels >= c) & (req.labels != UNLABELLED)
    if bad.any():
        raise ProtocolError(f"label {int(req.labels[np.argmax(bad)])} >= {c} classes (0xFFFF: no label)")
    cached, cap = int(b.cache.count[0]), b.cache.capacity
    applied = 0
    for sid, lab in zip(req.sample_ids.tolist(), req.labels.tolist()):  # in order: a later entry wins
        slot = sample_slot(sid, b.sample_base, b.pushed_total, cached, cap)
        if slot is not None:
            b.cache.labels[0, slot] = -1 if lab == UNLABELLED else lab
            applied += 1
    labelled = int(np.count_nonzero(b.cache.labels[0, :cached] >= 0))
    return Reply(payload=LabelResult(applied, labelled).encode())


def sample_slot(sample_id: int, base: int, pushed_total: int, cached: int, capacity: int) -> int | None:
    """The cache slot of sample id ``sample_id`` (docs/protocol.md "Sample ids"), None if it is not cached: id
    ``s`` is cached when ``1 <= pushed_total - s <= min(pushed_total - base, cached)``, in slot ``(s - base) mod
    capacity``, the differences in u32 arithmetic (as the C board: right across the wrap of pushed_total)."""
    age = (pushed_total - sample_id) & 0xFFFFFFFF  # 1 for the newest sample
    if 1 <= age <= min((pushed_total - base) & 0xFFFFFFFF, cached):
        return ((sample_id - base) & 0xFFFFFFFF) % capacity
    return None


HANDLERS: dict[int, Callable[[Board, bytes], Reply]] = {
    MsgType.HELLO: hello,
    MsgType.STATUS: status,
    MsgType.RESET: reset,
    MsgType.GET_HEAD: get_head,
    MsgType.SET_HEAD: set_head,
    MsgType.PUSH_SAMPLES: push_samples,
    MsgType.TRAIN: train,
    MsgType.READ_UPDATE: read_update,
    MsgType.UPDATE_ACK: update_ack,
    MsgType.EVALUATE: evaluate,
    MsgType.LABEL: label,
    MsgType.INFER: infer,
    MsgType.STAGE_INPUT: stage_input,
    MsgType.UPLOAD_BEGIN: upload_begin,
    MsgType.UPLOAD_CHUNK: upload_chunk,
    MsgType.UPLOAD_STATUS: upload_status,
    MsgType.VERIFY: verify,
    MsgType.ACTIVATE: activate,
    MsgType.CONFIRM: confirm,
    MsgType.ROLLBACK: rollback,
    MsgType.KEYS: keys,
    MsgType.KEY_CHANGE: key_change,
}
