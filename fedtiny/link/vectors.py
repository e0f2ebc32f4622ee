"""Test vectors of docs/protocol.md section 9: `python -m fedtiny.link.vectors [--write docs/protocol.md]`.

Without arguments prints the vector block; with --check PATH exits 1 if the doc's block differs.
"""

from __future__ import annotations

import re
import struct
import sys

import numpy as np

from fedtiny.link.blobs import UpdateBlob, encode_head_patch
from fedtiny.link.frames import FLAG_RESPONSE, Frame, encode_frame, pack_frame
from fedtiny.link.messages import (
    STAGE_INPUT_HEADER,
    TRAIN_FIXED,
    TRAIN_PSEUDO,
    UNLABELLED,
    BlobRead,
    HelloInfo,
    ImageKind,
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
    UploadBegin,
)
from fedtiny.ondevice import Int8Head

KEY = bytes(range(32))  # the fleet key of the vectors


def _head() -> Int8Head:
    w = (np.arange(2 * 3, dtype=np.int64).reshape(2, 3) * 37 % 255 - 127).astype(np.int8)
    return Int8Head(
        w, np.array([0.5, 0.25], np.float32), np.array([1000, -1], np.int32), 0.125, -128, 0.0625, 3
    )


def vectors() -> list[tuple[str, Frame]]:
    """(description, frame) pairs; the wire bytes are encode_frame(frame)."""
    resp = FLAG_RESPONSE
    hello = HelloInfo(1, 2, 4096, 0x12345678, 0x6B, 10, 64, 256, 0, 65536, 0, 4, 0, "vboard", "1.0.0")
    image = bytes(range(16))
    upd = UpdateBlob(
        7, 1, 3, 100, 0.5, np.array([[1.0, -2.0]], np.float32), np.array([0.25], np.float32)
    ).sign(KEY)
    return [
        ("HELLO request, seq 1", Frame(MsgType.HELLO, 1)),
        (
            "HELLO response, seq 1: device 0x12345678, caps 0x6B, C=10 D=64, 'vboard' '1.0.0'",
            Frame(MsgType.HELLO, 1, hello.encode(), resp),
        ),
        ("STATUS request, seq 0x0100 (header has zero bytes)", Frame(MsgType.STATUS, 0x0100)),
        (
            "GET_HEAD request, seq 2: offset 0, max_len 4088",
            Frame(MsgType.GET_HEAD, 2, BlobRead(0, 4088).encode()),
        ),
        (
            "GET_HEAD response, seq 2: 2x3 head patch (scales 0.5/0.25, bias 1000/-1, in 0.125/-128, out 0.0625/3)",
            Frame(
                MsgType.GET_HEAD,
                2,
                struct.pack("<I", len(encode_head_patch(_head()))) + encode_head_patch(_head()),
                resp,
            ),
        ),
        (
            "PUSH_SAMPLES request, seq 3: 2 features of D=3, labels 1,0, CLEAR",
            Frame(
                MsgType.PUSH_SAMPLES,
                3,
                Samples(0, 1, np.array([1, 0]), np.array([[1, 2, 3], [-1, 0, 127]], np.int8)).encode(),
            ),
        ),
        (
            "TRAIN request, seq 4: 1 epoch, batch 16, lr 0.05, mom 0.9, wd 0, mu 0.01, seed 42, round 3, flags 0 (float32)",
            Frame(MsgType.TRAIN, 4, TrainRequest(1, 16, 0.05, 0.9, 0.0, 0.01, 42, 3).encode()),
        ),
        (
            "TRAIN request, seq 9: fixed-point (flags FIXED), 2 epochs, batch 8, lr 0.05, mom 0, wd 0, mu 0, seed 42, round 3",
            Frame(MsgType.TRAIN, 9, TrainRequest(2, 8, 0.05, 0.0, 0.0, 0.0, 42, 3, TRAIN_FIXED).encode()),
        ),
        (
            "PUSH_SAMPLES request, seq 10: 1 float32 raw sample (kind 2) of 2 values 0.5, -1.25, label 4",
            Frame(
                MsgType.PUSH_SAMPLES,
                10,
                Samples(SampleKind.RAW_F32, 0, np.array([4]), np.array([[0.5, -1.25]], np.float32)).encode(),
            ),
        ),
        (
            "READ_UPDATE response, seq 5: update_id 1, 1x2 update of device 7, key bytes(range(32))",
            Frame(MsgType.READ_UPDATE, 5, struct.pack("<II", 1, len(upd.encode())) + upd.encode(), resp),
        ),
        (
            "UPLOAD_BEGIN request, seq 6: head patch, any slot, image bytes(range(16)), key bytes(range(32)), "
            "security counter 0",
            Frame(MsgType.UPLOAD_BEGIN, 6, UploadBegin.for_image(image, ImageKind.HEAD_PATCH, KEY).encode()),
        ),
        (
            "UPLOAD_CHUNK request, seq 7: offset 0, data bytes(range(16))",
            Frame(MsgType.UPLOAD_CHUNK, 7, struct.pack("<I", 0) + image),
        ),
        (
            "UPLOAD_CHUNK response, seq 7: next_offset 16",
            Frame(MsgType.UPLOAD_CHUNK, 7, struct.pack("<I", 16), resp),
        ),
        (
            "VERIFY response, seq 8: status AUTH_FAILED, reason 'unsigned image'",
            Frame(MsgType.VERIFY, 8, b"unsigned image", resp, Status.AUTH_FAILED),
        ),
        (
            "PUSH_SAMPLES request, seq 11: 2 features of D=2, the first labelled 3, the second without a label",
            Frame(
                MsgType.PUSH_SAMPLES,
                11,
                Samples(0, 0, np.array([3, UNLABELLED]), np.array([[5, -6], [7, 8]], np.int8)).encode(),
            ),
        ),
        (
            "LABEL request, seq 12: sample 1 gets label 2, sample 0x01020304 loses its label",
            Frame(
                MsgType.LABEL,
                12,
                LabelRequest(np.array([1, 0x01020304]), np.array([2, UNLABELLED])).encode(),
            ),
        ),
        (
            "LABEL response, seq 12: applied 1, labelled 5",
            Frame(MsgType.LABEL, 12, LabelResult(1, 5).encode(), resp),
        ),
        (
            "TRAIN request, seq 13: flags PSEUDO, 1 epoch, batch 4, lr 0.05, mom 0, wd 0, mu 0, seed 42, round 3, "
            "pseudo_margin 2.5, pseudo_weight 0.5",
            Frame(
                MsgType.TRAIN,
                13,
                TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 42, 3, TRAIN_PSEUDO, 2.5, 0.5).encode(),
            ),
        ),
        (
            "INFER request, seq 14: int8 features (kind 0) of D=3: 5, -6, 127",
            Frame(MsgType.INFER, 14, InferRequest(0, np.array([5, -6, 127], np.int8)).encode()),
        ),
        (
            "INFER response, seq 14: C=2, logits 12, -3, int8 model output -1, -128",
            Frame(
                MsgType.INFER,
                14,
                InferResult(
                    np.array([12, -3], np.int8), InferOutput.INT8, np.array([-1, -128], np.int8)
                ).encode(),
                resp,
            ),
        ),
        (
            "INFER request, seq 15: 1 float32 raw input (kind 2) of 2 values 0.5, -1.25",
            Frame(
                MsgType.INFER,
                15,
                InferRequest(SampleKind.RAW_F32, np.array([0.5, -1.25], np.float32)).encode(),
            ),
        ),
        (
            "INFER response, seq 15: C=2, logits 4, -4, float32 model output 0.75, 0.25",
            Frame(
                MsgType.INFER,
                15,
                InferResult(
                    np.array([4, -4], np.int8), InferOutput.FLOAT32, np.array([0.75, 0.25], np.float32)
                ).encode(),
                resp,
            ),
        ),
        (
            "INFER response, seq 16: no backbone (out_type 0, out_len 0), C=2, logits -128, 127",
            Frame(
                MsgType.INFER,
                16,
                InferResult(np.array([-128, 127], np.int8), InferOutput.NONE, np.zeros(0, np.int8)).encode(),
                resp,
            ),
        ),
        (
            "STAGE_INPUT request, seq 17: total 6, offset 0, data 1, 2, 3, 4 (the first piece of a 6-byte input)",
            Frame(MsgType.STAGE_INPUT, 17, STAGE_INPUT_HEADER.pack(6, 0) + bytes([1, 2, 3, 4])),
        ),
        (
            "STAGE_INPUT response, seq 17: staged 4",
            Frame(MsgType.STAGE_INPUT, 17, struct.pack("<I", 4), resp),
        ),
        (
            "STAGE_INPUT response, seq 18: BAD_OFFSET (a piece at offset 5 after a lost one), reason 'staged 4'",
            Frame(MsgType.STAGE_INPUT, 18, b"staged 4", resp, Status.BAD_OFFSET),
        ),
        (
            "PUSH_SAMPLES request, seq 19: the staged input as int8 (kind 3), n 1, dim 6, label 2",
            Frame(
                MsgType.PUSH_SAMPLES,
                19,
                Samples(SampleKind.STAGED_INT8, 0, np.array([2]), np.zeros((1, 0), np.int8), 6).encode(),
            ),
        ),
        (
            "INFER request, seq 20: the staged input as float32 (kind 4), dim 1024 (4,096 bytes staged)",
            Frame(
                MsgType.INFER, 20, InferRequest(SampleKind.STAGED_F32, np.zeros(0, np.float32), 1024).encode()
            ),
        ),
    ]


def render() -> str:
    lines = []
    for desc, fr in vectors():
        lines.append(
            f"* {desc}\n  - decoded: `{pack_frame(fr).hex()}`\n  - wire: `{encode_frame(fr).hex()}`\n"
        )
    return "\n".join(lines)


BLOCK = re.compile(r"VECTORS-BEGIN\n.*?VECTORS-END", re.DOTALL)


def replace_block(doc: str) -> str:
    return BLOCK.sub(lambda _: "VECTORS-BEGIN\n\n" + render() + "\nVECTORS-END", doc)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("--write", "--check"):
        doc = open(argv[1], encoding="utf-8").read()
        new = replace_block(doc)
        if argv[0] == "--check":
            return 0 if new == doc else 1
        open(argv[1], "w", encoding="utf-8").write(new)
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
