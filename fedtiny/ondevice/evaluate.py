"""A board's EVALUATE, exactly (docs/protocol.md "EVALUATE"): accuracy and loss of its int8 head on cached
features, the same bits on every board and CPU (the loss uses the training spec's float32 softmax, exp and log,
docs/ondevice.md §3)."""

from __future__ import annotations

import numpy as np

from fedtiny.ondevice.head import Int8Head, head_forward_int8
from fedtiny.ondevice.train import softmax_xent


def evaluate_head(head: Int8Head, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, loss) of ``head`` on int8 ``features`` [n, D] with class ``labels`` [n], n >= 1.

    accuracy = (correct as a double) / n, where a sample is correct when the argmax of its int8 logits (ties to the
    lowest index) is its label; loss = float32 of (the double sum, in sample order, of each sample's float32
    cross-entropy of the dequantized logits ``((float)q − (float)z_out) · s_out``) / n."""
    n = len(labels)
    q = head_forward_int8(head, features)
    y = np.asarray(labels, dtype=np.int64)
    correct = int(np.count_nonzero(np.argmax(q, axis=1) == y))
    logits = (q.astype(np.float32) - np.float32(head.output_zero_point)) * np.float32(head.output_scale)
    _, per_sample = softmax_xent(logits, y)
    total = 0.0
    for v in per_sample.tolist():  # a double sum in sample order, as the board's loop
        total += v
    return correct / n, float(np.float32(total / n))
