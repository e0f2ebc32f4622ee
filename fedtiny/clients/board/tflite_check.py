"""Validation of a full .tflite image before the virtual board runs it (VERIFY of image kind 2).

TFLite Micro trusts its flatbuffer: a corrupt offset or tensor size crashes the process (SIGSEGV). So the
board first walks the flatbuffer with explicit bounds checks (every table, vtable, vector and string inside
the image; structure, operator codes, tensor types, shapes and buffer sizes, indices, the arena), then runs
the model once in a child process: whatever the walk cannot rule out crashes the child, not the board.

The board runs exactly the ops of the C firmware (fedtiny.model.ops_table, the list the firmware's interpreter is
generated from): an op the firmware lacks is refused here too, with the firmware's reason ("op 2 TANH: operator not
supported by this firmware"), so both boards accept the same models.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys

from fedtiny.model.ops_table import FIRMWARE_CODES, NOT_SUPPORTED, op_name

ARENA_LIMIT = 256 * 1024  # the arena the board gives TFLite Micro (fedtiny.model.runtime.Int8Runner)
MAX_ELEMENTS = 1 << 24
TRIAL_TIMEOUT_S = 60.0
# TensorType -> bytes per element (float32, int32, uint8, int64, bool, int16, int8)
_ITEMSIZE = {0: 4, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1}


class _FB:
    """Bounds-checked reads of one flatbuffer."""

    def __init__(self, buf: bytes) -> None:
        self.b = buf

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > len(self.b):
            raise ValueError(f"{what} at {pos} (+{n}) outside the {len(self.b)}-byte image")

    def u8(self, pos: int) -> int:
        self._need(pos, 1, "u8")
        return self.b[pos]

    def i8(self, pos: int) -> int:
        self._need(pos, 1, "i8")
        return int(struct.unpack_from("<b", self.b, pos)[0])

    def u16(self, pos: int) -> int:
        self._need(pos, 2, "u16")
        return int(struct.unpack_from("<H", self.b, pos)[0])

    def i32(self, pos: int) -> int:
        self._need(pos, 4, "i32")
        return int(struct.unpack_from("<i", self.b, pos)[0])

    def u32(self, pos: int) -> int:
        self._need(pos, 4, "u32")
        return int(struct.unpack_from("<I", self.b, pos)[0])

    def u64(self, pos: int) -> int:
        self._need(pos, 8, "u64")
        return int(struct.unpack_from("<Q", self.b, pos)[0])

    def table(self, pos: int) -> _Table:
        vt = pos - self.i32(pos)
        size = self.u16(vt)
        if size < 4 or size % 2:
            raise ValueError(f"vtable at {vt}: size {size}")
        self._need(vt, size, "vtable")
        tsize = self.u16(vt + 2)
        self._need(pos, max(tsize, 4), "table")
        return _Table(self, pos, vt, size, tsize)

    def vector(self, pos: int, elem: int) -> tuple[int, int]:
        """(start, length) of the vector at pos, all of it inside the image."""
        n = self.u32(pos)
        self._need(pos + 4, n * elem, "vector")
        return pos + 4, n


class _Table:
    def __init__(self, fb: _FB, pos: int, vt: int, vsize: int, tsize: int) -> None:
        self.fb, self.pos, self.vt, self.vsize, self.tsize = fb, pos, vt, vsize, tsize

    def field(self, i: int, width: int) -> int | None:
        """Absolute position of scalar/offset field i, or None if absent."""
        if 4 + 2 * i >= self.vsize:
            return None
        off = self.fb.u16(self.vt + 4 + 2 * i)
        if off == 0:
            return None
        if off + width > self.tsize:
            raise ValueError(f"table at {self.pos}: field {i} beyond the table")
        return self.pos + off

    def scalar(self, i: int, kind: str, default: int = 0) -> int:
        width = {"u8": 1, "i8": 1, "i32": 4, "u32": 4, "u64": 8}[kind]
        f = self.field(i, width)
        return default if f is None else getattr(self.fb, kind)(f)

    def ref(self, i: int) -> int | None:
        f = self.field(i, 4)
        return None if f is None else f + self.fb.u32(f)

    def sub(self, i: int) -> _Table | None:
        p = self.ref(i)
        return None if p is None else self.fb.table(p)

    def vec(self, i: int, elem: int) -> tuple[int, int]:
        p = self.ref(i)
        return (0, 0) if p is None else self.fb.vector(p, elem)

    def tables(self, i: int) -> list[_Table]:
        start, n = self.vec(i, 4)
        return [self.fb.table(start + 4 * k + self.fb.u32(start + 4 * k)) for k in range(n)]

    def ints(self, i: int) -> list[int]:
        start, n = self.vec(i, 4)
        return [self.fb.i32(start + 4 * k) for k in range(n)]

    def floats(self, i: int) -> list[float]:
        start, n = self.vec(i, 4)
        return list(struct.unpack_from(f"<{n}f", self.fb.b, start)) if n else []

    def longs(self, i: int) -> list[int]:
        start, n = self.vec(i, 8)
        return list(struct.unpack_from(f"<{n}q", self.fb.b, start)) if n else []


class UnsupportedModel(ValueError):
    """The image is well formed but needs an op this board does not run (VERIFY answers UNSUPPORTED)."""


class ModelTooLarge(ValueError):
    """The image is well formed but exceeds a limit of this board, e.g. its arena (VERIFY answers NO_SPACE)."""


def check_structure(image: bytes) -> None:
    """ValueError naming the first problem of a .tflite image that TFLite Micro must not be given."""
    fb = _FB(bytes(image))
    if len(image) < 8 or image[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (identifier TFL3)")
    model = fb.table(fb.u32(0))
    if model.scalar(0, "u32") != 3:
        raise ValueError("TFLite schema version is not 3")
    # builtin codes (schema >= 3a: the larger of the deprecated int8 field and the int32 one); checked per op below
    opcodes = [max(oc.scalar(0, "i8"), oc.scalar(3, "i32")) for oc in model.tables(1)]
    buffers = model.tables(4)
    sizes = []
    for bt in buffers:
        if bt.scalar(1, "u64") or bt.scalar(2, "u64"):
            raise ValueError("buffers outside the flatbuffer are not supported")
        sizes.append(bt.vec(0, 1)[1])
    subgraphs = model.tables(2)
    if len(subgraphs) != 1:
        raise ValueError(f"{len(subgraphs)} subgraphs; the board runs models with one")
    sg = subgraphs[0]
    tensors = sg.tables(0)
    nt = len(tensors)
    arena = 0
    for k, t in enumerate(tensors):
        shape = t.ints(0)
        if any(d < 1 for d in shape):
            raise ValueError(f"tensor {k}: shape {shape}")
        elems = math.prod(shape)
        ttype = t.scalar(1, "i8")
        if ttype not in _ITEMSIZE or elems > MAX_ELEMENTS:
            raise ValueError(f"tensor {k}: type {ttype} or {elems} elements not supported")
        nbytes = elems * _ITEMSIZE[ttype]
        buf = t.scalar(2, "u32")
        if buf >= len(buffers):
            raise ValueError(f"tensor {k}: buffer {buf} of {len(buffers)}")
        if sizes[buf]:
            if sizes[buf] != nbytes:
                raise ValueError(f"tensor {k}: {sizes[buf]} bytes of data for {nbytes}")
        else:
            arena += nbytes
        q = t.sub(4)
        if q is not None:
            scales = q.floats(2)
            zps = q.longs(3)
            if not all(math.isfinite(s) and s > 0 for s in scales) or len(zps) not in (0, len(scales)):
                raise ValueError(f"tensor {k}: bad quantization")
            if any(not -(1 << 31) <= z < (1 << 31) for z in zps):
                raise ValueError(f"tensor {k}: zero point out of range")
            if len(scales) > 1 and not 0 <= q.scalar(6, "i32") < max(len(shape), 1):
                raise ValueError(f"tensor {k}: quantized dimension out of range")
    for what, idx in (("input", sg.ints(1)), ("output", sg.ints(2))):
        if not idx or any(not 0 <= i < nt for i in idx):
            raise ValueError(f"subgraph {what}s {idx} of {nt} tensors")
    ops = sg.tables(3)
    if not ops:
        raise ValueError("no operators")
    for k, op in enumerate(ops):
        if op.scalar(0, "u32") >= len(opcodes):
            raise ValueError(f"operator {k}: opcode index out of range")
        check_op(k, opcodes[op.scalar(0, "u32")])
        for i in op.ints(1) + op.ints(2):
            if not -1 <= i < nt:
                raise ValueError(f"operator {k}: tensor index {i} of {nt}")
    if arena > ARENA_LIMIT:
        raise ModelTooLarge(f"activations need {arena} bytes, the arena holds {ARENA_LIMIT}")


def check_op(index: int, code: int) -> None:
    """UnsupportedModel, with the C firmware's reason, for an op (builtin `code`) the firmware does not run."""
    if not 0 <= code <= 255:
        raise UnsupportedModel(f"unknown builtin operator {code}")
    if code not in FIRMWARE_CODES:
        raise UnsupportedModel(f"op {index} {op_name(code)}: {NOT_SUPPORTED}")


_TRIAL = """
import sys
import numpy as np
from fedtiny.model.runtime import Int8Runner
r = Int8Runner(sys.stdin.buffer.read(), "tflm")
r.run_int8(np.zeros((1, *r.input_shape), np.int8))
"""


def trial_run(image: bytes, timeout: float = TRIAL_TIMEOUT_S) -> None:
    """Load and invoke the model once in TFLite Micro in a child process; ValueError if that fails or crashes."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        r = subprocess.run(
            [sys.executable, "-c", _TRIAL],
            check=False,
            input=bytes(image),
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired:
        raise ValueError(f"trial run in TFLite Micro took more than {timeout:g} s") from None
    if r.returncode != 0:
        last = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        raise ValueError(f"trial run in TFLite Micro failed ({how}) {last[0][:120]}")


def check_model(image: bytes) -> None:
    """Structure first (cheap, in process), then one trial run in a child process."""
    check_structure(image)
    trial_run(image)
