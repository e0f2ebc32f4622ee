"""What travels in Flower messages between the server and gateways: int8 heads down, device heads up."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from fedtiny.ondevice.head import Int8Head


def head_to_record(head: Int8Head) -> ArrayRecord:
    """The int8 head patch a board receives (weights, scales, bias, quantization)."""
    q = np.array(
        [head.input_scale, head.input_zero_point, head.output_scale, head.output_zero_point], dtype=np.float64
    )
    return ArrayRecord(
        {
            "weights": Array(head.weights),
            "weight_scales": Array(head.weight_scales),
            "bias": Array(head.bias),
            "qparams": Array(q),
        }
    )


def head_from_record(rec: ArrayRecord) -> Int8Head:
    q = rec["qparams"].numpy()
    return Int8Head(
        rec["weights"].numpy(),
        rec["weight_scales"].numpy(),
        rec["bias"].numpy(),
        float(q[0]),
        int(q[1]),
        float(q[2]),
        int(q[3]),
    )


def arrays_to_record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def record_to_arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: rec[k].numpy() for k in rec}


def head_patch_bytes(head: Int8Head) -> int:
    """Bytes of a head patch (docs/protocol.md HeadPatch): 20-byte header, float32 scales, int32 bias, int8 weights."""
    return int(20 + 8 * head.num_classes + head.weights.size)


def float_update_bytes(num_classes: int, dim: int) -> int:
    """Bytes of one device's float32 head update plus its count and loss."""
    return 4 * num_classes * (dim + 1) + 8


def encode_int8_delta(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 of ``delta`` [K, C, D]: (int8 [K, C, D], float32 scales [K, C])."""
    a = np.abs(delta).max(axis=2)
    # a non-finite row keeps a NaN scale, so that the server rejects it (int8 codes cannot carry NaN/Inf)
    scale = np.where(np.isfinite(a), np.where(a > 0, a / 127.0, 1.0), np.nan).astype(np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.round(delta / scale[..., None]), -127, 127)
    return np.nan_to_num(q).astype(np.int8), scale


def decode_int8_delta(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_int8_delta`; a NaN scale (non-finite update) gives a NaN row."""
    return q.astype(np.float32) * scale[..., None]
