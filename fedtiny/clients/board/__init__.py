"""The virtual board: a device emulator speaking docs/protocol.md (`python -m fedtiny.clients.board --listen ...`)."""

import threading
from collections.abc import Callable

from fedtiny.clients.board.config import BoardConfig
from fedtiny.clients.board.device import VirtualBoard, default_head
from fedtiny.clients.board.flash import EmulatedFlash, PowerCut
from fedtiny.ondevice import Int8Head

__all__ = ["BoardConfig", "EmulatedFlash", "PowerCut", "VirtualBoard", "default_head", "serve_board"]


def serve_board(
    listen_uri: str,
    state_file: str,
    device_id: int,
    fleet_key: bytes | None,
    head: Int8Head | None = None,
    cfg: BoardConfig | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[str], None] | None = None,
    model: bytes | None = None,
) -> None:
    """See :func:`fedtiny.clients.board.server.serve_board` (imported lazily: it pulls in sockets and ptys)."""
    from fedtiny.clients.board.server import serve_board as _serve

    _serve(listen_uri, state_file, device_id, fleet_key, head, cfg, stop, ready, model)
