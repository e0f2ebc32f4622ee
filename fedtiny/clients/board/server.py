"""Serve one virtual board on a TCP socket or a pty: `python -m fedtiny.clients.board --listen socket://127.0.0.1:PORT`."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable

from fedtiny.clients.board.config import BoardConfig
from fedtiny.clients.board.device import VirtualBoard
from fedtiny.clients.board.flash import PowerCut
from fedtiny.errors import LinkError
from fedtiny.link.frames import FrameReader
from fedtiny.ondevice import Int8Head


def _pump(
    recv: Callable[[], bytes], send: Callable[[bytes], None], board: VirtualBoard, stop: threading.Event
) -> None:
    while not stop.is_set():
        data = recv()
        if data is None:
            return
        if not data:
            continue
        try:
            out = board.feed(data)
        except PowerCut:
            board.reboot()
            continue
        if out:
            try:
                send(out)
            except OSError:  # the host reset the link with answers in flight: serve the next connection
                return


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
    """Serve one board until `stop` is set. `listen_uri`: `socket://HOST:PORT` (any number of clients, each
    request answered on the connection it came from; an idle client blocks nobody) or
    `pty` (prints/reports the slave path). `ready(address)` is called once listening. `model`: a full int8
    .tflite the board runs in TFLite Micro (backbone for raw samples; its head is the factory head)."""
    cfg = cfg or BoardConfig()
    cfg.device_id, cfg.fleet_key = device_id, fleet_key
    board = VirtualBoard(cfg, state_file, head, model=model)
    stop = stop or threading.Event()
    if listen_uri in ("pty", "pty://"):
        master, slave = os.openpty()
        import tty

        tty.setraw(slave)
        name = os.ttyname(slave)
        (ready or print)(name)

        def recv_pty() -> bytes:
            r, _, _ = select.select([master], [], [], 0.1)
            return os.read(master, 65536) if r else b""

        def send_pty(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(master, view) :]

        try:
            _pump(recv_pty, send_pty, board, stop)
        finally:
            os.close(master)
            os.close(slave)
        return
    if not listen_uri.startswith("socket://"):
        raise LinkError(f"cannot listen on {listen_uri!r}: use socket://HOST:PORT or pty")
    host, _, port = listen_uri[len("socket://") :].rpartition(":")
    srv = socket.create_server((host or "127.0.0.1", int(port)))
    srv.setblocking(False)
    (ready or print)(f"socket://{host or '127.0.0.1'}:{srv.getsockname()[1]}")
    clients: dict[socket.socket, FrameReader] = {}  # every connected host has its own deframer
    try:
        while not stop.is_set():
            r, _, _ = select.select([srv, *clients], [], [], 0.1)
            for sock in r:
                if sock is srv:
                    try:
                        conn, _ = srv.accept()
                    except OSError:
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.settimeout(5.0)  # a host that stops reading cannot stall the board for long
                    clients[conn] = FrameReader(board.cfg.max_payload)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # closed or reset by the host: serve the others
                    clients.pop(sock)
                    sock.close()
                    continue
                try:
                    out = board.feed(data, clients[sock])
                except PowerCut:
                    board.reboot()
                    continue
                if out:
                    try:
                        sock.sendall(out)
                    except OSError:  # the host reset the link with answers in flight
                        clients.pop(sock)
                        sock.close()
    finally:
        for c in clients:
            c.close()
        srv.close()
