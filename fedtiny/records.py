"""What travels in Flower messages between the server and gateways: int8 heads down, device heads up."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from fedtiny.ondevice.head import Int8Head


def head_to_record(head: Int8Head) -> ArrayRecord:
    """The int8 head patch a board receives (weights, scales, bias, quantization)."""
    q = np.array([head.input_scale, head.input_zero_point, head.output_scale, head.output_zero_point], dtype=np.float64)
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
        rec["weights"].numpy(), rec["weight_scales"].numpy(), rec["bias"].numpy(),
        float(q[0]), int(q[1]), float(q[2]), int(q[3]),
    )


def arrays_to_record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def record_to_arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: rec[k].numpy() for k in rec}


def head_patch_bytes(head: Int8Head) -> int:
    """Bytes of a head patch on the wire: int8 weights, float32 scales, int32 bias, 16 B of quantization."""
    return int(head.weights.size + 8 * head.num_classes + 16)


def float_update_bytes(num_classes: int, dim: int) -> int:
    """Bytes of one device's float32 head update plus its count and loss."""
    return 4 * num_classes * (dim + 1) + 8
