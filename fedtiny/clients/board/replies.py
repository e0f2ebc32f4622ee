"""Replies of the board's request handlers and the helpers several handler modules share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedtiny.clients.board.api import Board
from fedtiny.errors import ModelError
from fedtiny.link.messages import SampleKind, Samples, SlotInfo, SlotStatus, Status
from fedtiny.ondevice import Int8Head


@dataclass
class Reply:
    """A handler's answer: status, payload, and what runs once the response is encoded."""

    status: int = Status.OK
    payload: bytes = b""
    after: Callable[[], None] | None = None  # runs after the response is encoded (RESET)


def err(status: int, reason: str) -> Reply:
    """An error reply: the status and its reason (UTF-8, at most 200 bytes)."""
    return Reply(status, reason.encode()[:200])


def slot_status(b: Board) -> bytes:
    """The encoded SlotStatus of ``b`` (STATUS and the upload replies)."""
    m = b.meta
    slots = [SlotInfo(s.state, s.kind, s.total_len, s.received, s.sha256) for s in m.slots]
    return SlotStatus(b.active, m.confirmed, m.reverted, slots).encode()


def check_fits_backbone(b: Board, head: Int8Head) -> None:
    """ModelError if the head cannot be written into the firmware model (input quantization, shape). A board
    without a backbone checks the input quantization against its firmware head's: the cached features are
    quantized that way."""
    f = b.factory_head
    if np.float32(head.input_scale) != np.float32(f.input_scale) or int(head.input_zero_point) != int(
        f.input_zero_point
    ):
        raise ModelError(
            f"head input quantization {head.input_scale}/{head.input_zero_point} differs from the "
            f"board's features {f.input_scale}/{f.input_zero_point}"
        )
    if b.base_model is not None:
        from fedtiny.model.flatbuffer import write_head

        write_head(b.base_model, head)


def staged_input(b: Board, kind: int, dim: int) -> np.ndarray | None:
    """The complete staged raw input (STAGE_INPUT) read as ``kind`` (3 int8, 4 float32) of ``dim`` elements, or
    None: nothing staged, incomplete, or of another size."""
    size = dim * (4 if kind == SampleKind.STAGED_F32 else 1)
    if size == 0 or b.input_total != size or len(b.input_buf) != size:
        return None
    x = np.frombuffer(bytes(b.input_buf), Samples.dtype(kind), dim)
    return x.astype(np.float32) if kind == SampleKind.STAGED_F32 else x.copy()
