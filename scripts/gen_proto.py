#!/usr/bin/env python3
"""Generate firmware/core/ft_proto.h (the C firmware's wire constants) from the Python protocol modules.

Message types, status codes, capabilities, flags, slot states, image kinds, limits and the fixed layout sizes of
docs/protocol.md are defined once, in fedtiny.link (frames, messages, blobs, signing); the C header is written
from them, so the two boards cannot disagree on a number.

    .venv/bin/python scripts/gen_proto.py            # rewrite firmware/core/ft_proto.h
    .venv/bin/python scripts/gen_proto.py --check    # exit 1 if the checked-in header is stale
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "firmware" / "core" / "ft_proto.h"
sys.path.insert(0, str(ROOT))

from fedtiny.link import blobs, frames, messages, signing
from fedtiny.link.messages import (
    Cap,
    HelloInfo,
    ImageKind,
    InferOutput,
    MsgType,
    SampleKind,
    SlotState,
    Status,
)

SOURCES = "fedtiny/link/{frames,messages,blobs,signing}.py"

# (C name, value, comment). Names the firmware already uses for its own (build-time or storage) constants get the
# FT_WIRE_ prefix; firmware/core/ft_dev_internal.h checks at compile time that those agree with these.
Row = tuple[str, "int | float", str]


def update_header_size() -> int:
    """Bytes of an UpdateBlob before its weights: the body of a 0x0 update."""
    empty = blobs.UpdateBlob(0, 0, 0, 0, 0.0, np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    return len(empty.body())


def scalars() -> list[tuple[str, list[Row]]]:
    m = messages
    return [
        (
            "framing (section 1)",
            [
                ("FT_PROTO_VERSION", frames.PROTOCOL_VERSION, "header version"),
                ("FT_FLAG_RESPONSE", frames.FLAG_RESPONSE, "header flags: set in every device->host frame"),
                ("FT_FLAG_RETRY", frames.FLAG_RETRY, "header flags: the host re-sends (informative)"),
                ("FT_HDR_SIZE", frames.HEADER_SIZE, "header bytes"),
                ("FT_CRC_SIZE", frames.CRC_SIZE, "CRC-32 bytes after the payload"),
                ("FT_WIRE_MAX_PAYLOAD", frames.DEFAULT_MAX_PAYLOAD, "max_payload: at most"),
                ("FT_WIRE_MIN_MAX_PAYLOAD", frames.MIN_MAX_PAYLOAD, "max_payload: at least"),
                ("FT_REASON_MAX", m.REASON_MAX, "bytes of the reason of a non-OK response"),
            ],
        ),
        (
            "flags and special values (section 4)",
            [
                ("FT_ANY_SLOT", m.ANY_SLOT, "UploadBegin.slot: the device picks the upload slot"),
                ("FT_WIRE_NO_SLOT", m.NO_SLOT, "active / confirmed: none"),
                ("FT_UPLOAD_RESTART", m.UPLOAD_RESTART, "UploadBegin.flags: erase even if resumable"),
                ("FT_UPLOAD_SIGNED", m.UPLOAD_SIGNED, "UploadBegin.flags: signed MCUboot image"),
                ("FT_SAMPLES_CLEAR", m.SAMPLES_CLEAR, "Samples.flags: empty the cache first"),
                ("FT_TRAIN_FIXED", m.TRAIN_FIXED, "TrainRequest.flags: fixed-point SGD"),
                ("FT_TRAIN_PSEUDO", m.TRAIN_PSEUDO, "TrainRequest.flags: pseudo-label unlabelled slots"),
                ("FT_UNLABELLED", m.UNLABELLED, "the label of a sample without one (PUSH_SAMPLES, LABEL)"),
                ("FT_SS_REVERTED", m.SS_REVERTED, "SlotStatus.flags: boot reverted a test"),
                ("FT_SS_FELL_BACK", m.SS_FELL_BACK, "SlotStatus.flags: boot ran another slot"),
            ],
        ),
        (
            "limits (outside them: MALFORMED)",
            [
                ("FT_TRAIN_MAX_EPOCHS", m.TRAIN_MAX_EPOCHS, "TrainRequest: 1 <= epochs <= this"),
                ("FT_TRAIN_MAX_LR", m.TRAIN_MAX_LR, "TrainRequest: 0 < lr <= this"),
                ("FT_TRAIN_MAX_DECAY", m.TRAIN_MAX_DECAY, "weight_decay, prox_mu in [0, this]"),
                ("FT_TRAIN_MAX_WORK", m.TRAIN_MAX_WORK, "TrainRequest: epochs x cached samples <= this"),
                ("FT_WIRE_UPDATE_ID_BLOCK", m.UPDATE_ID_BLOCK, "update ids reserved per flash write"),
                ("FT_MAX_TRUSTED_KEYS", signing.MAX_TRUSTED_KEYS, "Ed25519 keys a board holds"),
            ],
        ),
        (
            "fixed layout sizes, bytes (section 4)",
            [
                ("FT_HELLO_FIXED_SIZE", HelloInfo._ST.size, "HelloInfo before the board_name length"),
                ("FT_HELLO_EXT", m.HELLO_EXT, "HELLO request payload asking for the extension"),
                ("FT_HELLO_EXT_SIZE", HelloInfo.EXT_ST.size, "HelloInfo extension: arena_bytes"),
                ("FT_BLOB_READ_SIZE", m.BLOB_READ.size, "BlobRead (GET_HEAD, READ_UPDATE)"),
                ("FT_BLOB_PAGE_HDR_SIZE", 4, "BlobPage: u32 total_len before the bytes"),
                ("FT_SET_HEAD_HDR_SIZE", m.SET_HEAD_HEADER.size, "SET_HEAD: total, offset"),
                ("FT_STAGE_INPUT_HDR_SIZE", m.STAGE_INPUT_HEADER.size, "STAGE_INPUT: total, offset"),
                ("FT_SAMPLES_HDR_SIZE", m.SAMPLES_HEADER.size, "Samples: kind, flags, n, dim"),
                ("FT_PUSH_RESULT_SIZE", m.PUSH_RESULT.size, "PUSH_SAMPLES response"),
                ("FT_TRAIN_REQUEST_SIZE", m.TrainRequest.SIZE, "TrainRequest"),
                ("FT_TRAIN_REQUEST_LEGACY_SIZE", m.TrainRequest.LEGACY_SIZE, "TrainRequest without flags"),
                ("FT_TRAIN_REQUEST_PSEUDO_SIZE", m.TrainRequest.PSEUDO_SIZE, "TrainRequest with flag PSEUDO"),
                ("FT_INFER_HDR_SIZE", m.INFER_HEADER.size, "InferRequest: kind, reserved, dim"),
                ("FT_INFER_RESULT_HDR_SIZE", m.INFER_RESULT_HEADER.size, "InferResult before the logits"),
                ("FT_LABEL_ENTRY_SIZE", m.LABEL_ENTRY.itemsize, "LABEL entry: u32 sample id, u16 label"),
                ("FT_LABEL_RESULT_SIZE", m.LabelResult.SIZE, "LABEL response"),
                ("FT_TRAIN_RESULT_SIZE", m.TrainResult.SIZE, "TRAIN response"),
                ("FT_EVAL_RESULT_SIZE", m.EvalResult.SIZE, "EVALUATE response"),
                ("FT_UPLOAD_BEGIN_SIZE", m.UploadBegin.SIZE, "UploadBegin"),
                ("FT_UPLOAD_STATE_SIZE", m.UploadState.SIZE, "UploadState"),
                ("FT_UPLOAD_CHUNK_HDR_SIZE", m.UPLOAD_CHUNK_HEADER.size, "UPLOAD_CHUNK: offset"),
                ("FT_VERIFY_RESULT_SIZE", m.VERIFY_RESULT.size, "VERIFY response: slot, state, sha256"),
                ("FT_CONFIRM_HDR_SIZE", m.CONFIRM_HEADER.size, "Confirm before the vectors"),
                ("FT_SLOT_STATUS_HDR_SIZE", m.SLOT_STATUS_HEADER.size, "SlotStatus before the slots"),
                ("FT_SLOT_INFO_SIZE", m.SLOT_INFO.size, "SlotStatus: one slot"),
                ("FT_HEAD_PATCH_HDR_SIZE", blobs.head_patch_size(0, 0), "HeadPatch before the scales"),
                ("FT_UPDATE_BLOB_HDR_SIZE", update_header_size(), "UpdateBlob before the weights"),
                ("FT_TAG_SIZE", blobs.TAG_SIZE, "HMAC-SHA256 tags (UploadBegin, UpdateBlob)"),
                ("FT_KEY_CHANGE_SIZE", signing.KEY_CHANGE_SIZE, "KeyChange"),
                ("FT_KEY_CHANGE_SIGNED", signing.KEY_CHANGE_SIGNED, "KeyChange bytes the signature covers"),
                ("FT_KEY_SET_HDR_SIZE", len(signing.KeySet(0, 0, []).encode()), "KeySet header"),
                ("FT_KEY_CHANGE_ADD", signing.KEY_ADD, "KeyChange.op: add a trusted key"),
                ("FT_KEY_CHANGE_RETIRE", signing.KEY_RETIRE, "KeyChange.op: retire a trusted key"),
            ],
        ),
    ]


# (enum, C prefix, what)
ENUMS: list[tuple[type[IntEnum], str, str]] = [
    (MsgType, "FT_MSG_", "message types (section 4)"),
    (Status, "FT_ST_", "status codes (section 2)"),
    (SlotState, "FT_WIRE_SLOT_", "slot states (section 5)"),
    (ImageKind, "FT_WIRE_KIND_", "image kinds (UploadBegin.kind)"),
    (SampleKind, "FT_SAMPLE_", "sample kinds (Samples.kind)"),
    (InferOutput, "FT_INFER_OUT_", "InferResult.out_type"),
]


def c_value(v: int | float) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"not a number: {v!r}")
    if isinstance(v, float):
        return f"{v!r}f"
    return f"0x{v:02X}u" if v == 0xFF else f"{v}u"  # 0xFF: the "none / any" values


def render() -> str:
    out = [
        "/* Generated by scripts/gen_proto.py from " + SOURCES + ". Do not edit:",
        " * change the Python definition, then run `.venv/bin/python scripts/gen_proto.py`",
        " * (tests/test_firmware.py::test_proto_header_up_to_date fails while this file is stale).",
        " * The wire constants of docs/protocol.md: message types, status codes, capabilities, flags, slot states,",
        " * image kinds, limits and fixed layout sizes. */",
        "#ifndef FT_PROTO_H",
        "#define FT_PROTO_H",
        "",
    ]
    for title, rows in scalars():
        out.append(f"/* {title} */")
        for name, value, comment in rows:
            out.append(f"#define {name} {c_value(value)} /* {comment} */")
        out.append("")
    for enum, prefix, what in ENUMS:
        out.append(f"/* {what} */")
        out.append("enum {")
        fmt = "0x{:02X}" if enum is MsgType else "{}"
        items = [f"    {prefix}{e.name} = {fmt.format(int(e))}" for e in enum]
        out.append(",\n".join(items))
        out.append("};")
        out.append("")
    out.append("/* capabilities (HelloInfo.capabilities bits) */")
    for cap in Cap:
        out.append(f"#define FT_CAP_{cap.name} (1u << {int(cap).bit_length() - 1})")
    out += ["", "#endif", ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the checked-in header differs")
    args = ap.parse_args()
    text = render()
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{rel} is stale: run .venv/bin/python scripts/gen_proto.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {rel} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
