"""The virtual board: a device emulator speaking docs/protocol.md (`python -m fedtiny.clients.board --listen ...`)."""

from typing import Any

from fedtiny.clients.board.config import BoardConfig
from fedtiny.clients.board.device import VirtualBoard, default_head
from fedtiny.clients.board.flash import EmulatedFlash, PowerCut

__all__ = ["BoardConfig", "EmulatedFlash", "PowerCut", "VirtualBoard", "default_head", "serve_board"]


def serve_board(*args: Any, **kwargs: Any) -> None:
    """See :func:`fedtiny.clients.board.server.serve_board` (imported lazily: it pulls in sockets and ptys)."""
    from fedtiny.clients.board.server import serve_board as _serve

    _serve(*args, **kwargs)
