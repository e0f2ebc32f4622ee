"""What a board needs to know about a model: ops, sizes, head shape, tensor arena."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from fedtiny.model.flatbuffer import (
    ModelIO,
    builtin_name,
    metadata_classes,
    model_io,
    op_names,
    read_head,
    with_head_bias,
)


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


#: the C firmware's head limits (firmware/core/fedtiny_config.h: FT_MAX_CLASSES, FT_MAX_DIM)
FIRMWARE_MAX_CLASSES = 16
FIRMWARE_MAX_DIM = 128


@dataclass(frozen=True)
class ModelInfo:
    bytes: int
    ops: list[str]
    head_classes: int
    head_features: int
    head_bytes: int
    arena_bytes: int
    io: ModelIO
    classes: tuple[str, ...] = ()
    firmware_arena: str = ""  # the C firmware's plan for the model (firmware_arena_line)

    @property
    def firmware_fits(self) -> bool:
        return self.head_classes <= FIRMWARE_MAX_CLASSES and self.head_features <= FIRMWARE_MAX_DIM

    def lines(self) -> list[str]:
        refused = self.firmware_arena.startswith("the fedtiny C firmware refuses")
        fw = (
            "the fedtiny C firmware refuses the model (arena fw below)"
            if refused
            else "fits the fedtiny C firmware's head limits"
            if self.firmware_fits
            else f"larger than the fedtiny C firmware's defaults (classes <= {FIRMWARE_MAX_CLASSES}, features <= "
            f'{FIRMWARE_MAX_DIM}): build it with FT_DEFS="-DFT_MAX_CLASSES={self.head_classes} '
            f'-DFT_MAX_DIM={self.head_features}" (`fedtiny info MODEL --board NAME` gives every option)'
        )
        return [
            f"size:     {self.bytes} bytes ({self.bytes / 1024:.1f} KiB)",
            f"ops:      {', '.join(self.ops)}",
            f"input:    {self.io.input_dtype} {list(self.io.input_shape)}"
            + (f" (quantized with scale {self.io.input_scale:.6g}, zero point {self.io.input_zero_point})"),
            f"output:   {self.io.output_dtype}",
            f"head:     {self.io.head_path} ({self.head_bytes} bytes int8 weights + scales + bias, "
            f"{'per-tensor' if self.io.per_tensor else 'per-channel'} weight scales; {fw})",
            f"features: {self.io.feature_tensor}",
            f"classes:  {', '.join(self.classes) if self.classes else f'{self.head_classes} (names unknown: the model has no label metadata)'}",
            f"arena:    {self.arena_bytes} bytes ({self.arena_bytes / 1024:.1f} KiB, smallest TFLite Micro accepts)",
        ] + ([f"arena fw: {self.firmware_arena}"] if self.firmware_arena else [])


def firmware_arena_line(model: bytes) -> str:
    """The C firmware's arena for the model (its planner tool, firmware/tools/ft_plan), or how to get it."""
    from fedtiny.model import fwplan

    try:
        plan = fwplan.firmware_plan(model)
    except FileNotFoundError:
        return f"the fedtiny C firmware's planner is not built: {fwplan.BUILD_HINT} (then firmware/build/tools/ft_plan)"
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:  # a broken tool: info still works
        return f"the fedtiny C firmware's planner failed: {e}"
    if isinstance(plan, str):  # the firmware names only the ops it knows: name the others from the schema
        named = re.sub(r"BUILTIN_(\d+)", lambda m: builtin_name(int(m.group(1))), plan)
        return f"the fedtiny C firmware refuses the model: {named}"
    return f"{plan.arena_bytes} bytes ({plan.arena_bytes / 1024:.1f} KiB, the fedtiny C firmware's plan, {plan.kernels} kernels)"


def model_info(model: bytes) -> ModelInfo:
    """What fedtiny sees in a model (a head without a bias is shown with the zero bias fedtiny adds)."""
    model = with_head_bias(model)
    io = model_io(model)
    head = read_head(model)
    return ModelInfo(
        len(model),
        op_names(model),
        head.num_classes,
        head.num_features,
        head.nbytes,
        min_arena_bytes(model),
        io,
        metadata_classes(model),
        firmware_arena_line(model),
    )
