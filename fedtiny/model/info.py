"""What a board needs to know about a model: ops, sizes, head shape, tensor arena."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from fedtiny.model.flatbuffer import op_names, read_head


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """TFLite Micro prints every failed allocation to the C stderr: silence it during the search."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def min_arena_bytes(model: bytes, upper: int = 1 << 20) -> int:
    """Smallest tensor arena TFLite Micro accepts for the model (binary search to 256 bytes)."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    def fits(size: int) -> bool:
        try:
            tflm.Interpreter.from_bytes(model, arena_size=size)
            return True
        except Exception:  # TFLM raises RuntimeError on a failed AllocateTensors
            return False

    lo, hi = 256, upper
    with _quiet_stderr():
        if not fits(hi):
            return -1
        while hi - lo > 256:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class ModelInfo:
    bytes: int
    ops: list[str]
    head_classes: int
    head_features: int
    head_bytes: int
    arena_bytes: int

    def lines(self) -> list[str]:
        return [
            f"size:   {self.bytes} bytes ({self.bytes / 1024:.1f} KiB)",
            f"ops:    {', '.join(self.ops)}",
            f"head:   FULLY_CONNECTED {self.head_features} -> {self.head_classes} "
            f"({self.head_bytes} bytes int8 weights + scales + bias)",
            f"arena:  {self.arena_bytes} bytes ({self.arena_bytes / 1024:.1f} KiB, smallest TFLite Micro accepts)",
        ]


def model_info(model: bytes) -> ModelInfo:
    head = read_head(model)
    return ModelInfo(len(model), op_names(model), head.num_classes, head.num_features, head.nbytes, min_arena_bytes(model))
