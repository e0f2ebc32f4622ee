"""Which cached samples a board trains on, and the labels it gives itself (docs/ondevice.md §5a).

A cache slot holds a label or :data:`UNLABELLED`. At TRAIN the board keeps, in slot order, every slot with a
label and, when pseudo-labels are on, every unlabelled slot its running int8 head is confident about: the
margin between its two largest int8 logits, in real units (float32 ``(q1 - q2) * output_scale``), is at least
the threshold. That slot trains on the head's argmax (ties to the lowest class) with gradient weight
``pseudo_weight``. Everything here is integer arithmetic and one float32 multiply and compare per slot, so the
simulated fleet, the virtual board and the C firmware pick the same slots and labels bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.ondevice.head import Int8Head, head_forward_int8

#: the label of a cached sample that has none (the wire's u16 0xFFFF; -1 in int arrays)
UNLABELLED = 0xFFFF


def pseudo_threshold(confidence: float, num_classes: int) -> float:
    """The float32 margin threshold for a confidence ``p`` in (0, 1): a margin ``m`` between the two largest
    logits guarantees a softmax probability of at least ``1 / (1 + (C - 1) e^-m)`` for the top class, which is
    ``p`` at ``m = ln(p (C - 1) / (1 - p))``. Computed once by the host, sent as float32 in TRAIN."""
    if not 0.0 < confidence < 1.0:
        raise ModelError(f"pseudo-label confidence must be in (0, 1), got {confidence}")
    c = max(int(num_classes), 2)
    return float(np.float32(math.log(confidence * (c - 1) / (1.0 - confidence))))


def pseudo_labels(head: Int8Head, features: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(argmax class int64 [...], confident bool [...]) of the int8 head on int8 ``features`` [..., D]."""
    q = head_forward_int8(head, features).astype(np.int32)
    top = np.argmax(q, axis=-1)  # ties: the lowest class index
    q1 = np.take_along_axis(q, top[..., None], axis=-1)[..., 0]
    if q.shape[-1] > 1:
        rest = q.copy()
        np.put_along_axis(rest, top[..., None], np.iinfo(np.int32).min, axis=-1)
        q2 = rest.max(axis=-1)
    else:
        q2 = q1
    margin = (q1 - q2).astype(np.float32) * np.float32(head.output_scale)
    return top.astype(np.int64), margin >= np.float32(threshold)


@dataclass(frozen=True)
class TrainingSet:
    """The slots one device trains on, in slot order, with their labels and gradient weights."""

    slots: np.ndarray  # int64 [n]: cache slots
    labels: np.ndarray  # int64 [n]
    weights: np.ndarray  # float32 [n]: 1 for a label the board was given, pseudo_weight for its own
    pseudo: np.ndarray  # bool [n]


def training_set(
    head: Int8Head,
    features: np.ndarray,
    labels: np.ndarray,
    count: int,
    threshold: float | None = None,
    pseudo_weight: float = 1.0,
) -> TrainingSet:
    """The training set of one device: ``features`` int8 [N, D] and ``labels`` [N] (a class, or -1 /
    :data:`UNLABELLED` for none) of its cache slots, the first ``count`` of them valid; ``threshold`` None: no
    pseudo-labels."""
    n = min(int(count), len(labels))
    lab = np.asarray(labels, dtype=np.int64)[:n]
    known = (lab >= 0) & (lab != UNLABELLED)
    out = np.where(known, lab, -1)
    pseudo = np.zeros(n, dtype=bool)
    if threshold is not None and not known.all():
        miss = np.flatnonzero(~known)
        cls, ok = pseudo_labels(head, np.asarray(features[:n])[miss], threshold)
        out[miss[ok]] = cls[ok]
        pseudo[miss[ok]] = True
    keep = np.flatnonzero(known | pseudo)
    w = np.where(pseudo[keep], np.float32(pseudo_weight), np.float32(1.0)).astype(np.float32)
    return TrainingSet(keep, out[keep], w, pseudo[keep])


def fixed_weight(pseudo_weight: float) -> int:
    """The fixed-point trainer's Q16 gradient weight of a pseudo-labelled sample (docs/ondevice.md §3b)."""
    return int(math.floor(float(np.float32(pseudo_weight)) * 65536.0 + 0.5))


__all__ = ["UNLABELLED", "TrainingSet", "fixed_weight", "pseudo_labels", "pseudo_threshold", "training_set"]
