"""Byte transports behind one small protocol, and `open_transport(uri)`.

A transport moves raw bytes (COBS frames are the session's business): `write(bytes)`,
`read(timeout) -> bytes` (whatever arrived, b"" on timeout), `close()`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from fedtiny.errors import LinkError


@runtime_checkable
class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class SerialTransport:
    """Any URL pyserial accepts: a device path, `socket://host:port`, `rfc2217://`, `loop://`."""

    def __init__(self, url: str, baudrate: int = 115200, **kwargs: Any) -> None:
        import serial

        try:
            self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=10, **kwargs)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from None
        self.url = url

    def write(self, data: bytes) -> None:
        import serial

        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.url}: write failed: {e}") from None

    def read(self, timeout: float) -> bytes:
        import serial

        try:
            self.ser.timeout = max(timeout, 0.0)
            first = self.ser.read(1)
            if not first:
                return b""
            n = self.ser.in_waiting
            return first + (self.ser.read(n) if n else b"")
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.url}: read failed: {e}") from None

    def close(self) -> None:
        self.ser.close()


class InProcessTransport:
    """Pairs directly with a virtual board in the same process (`board.feed(bytes) -> bytes`)."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self._rx = bytearray()

    def write(self, data: bytes) -> None:
        self._rx += self.board.feed(data)

    def read(self, timeout: float) -> bytes:
        out = bytes(self._rx)
        self._rx.clear()
        return out

    def close(self) -> None:
        self._rx.clear()


class PacedTransport:
    """Wraps a board in an emulated link of a given byte rate (full duplex), in real time.

    UART: `bytes_per_s = baud / 10`. BLE: `packet=244` bytes per packet, `interval=7.5e-3` s per connection
    event and `packets_per_event` packets per direction per event.
    """

    def __init__(
        self,
        board: Any,
        bytes_per_s: float | None = None,
        packet: int = 0,
        interval: float = 0.0,
        packets_per_event: int = 1,
    ) -> None:
        self.board = board
        self.rate = bytes_per_s
        self.packet, self.interval, self.ppe = packet, interval, packets_per_event
        self._up: list[tuple[float, bytes]] = []  # (arrival time, bytes) host -> board
        self._down: list[tuple[float, bytes]] = []
        self._up_free = self._down_free = time.monotonic()
        self.wire_up = self.wire_down = 0

    def _schedule(self, queue: list[tuple[float, bytes]], free: float, data: bytes) -> float:
        t = max(time.monotonic(), free)
        if self.rate:
            t += len(data) / self.rate
            queue.append((t, data))
            return t
        for i in range(0, len(data), self.packet):  # BLE: one packet per slot of a connection event
            t += self.interval / self.ppe
            queue.append((t, data[i : i + self.packet]))
        return t

    def write(self, data: bytes) -> None:
        self.wire_up += len(data)
        self._up_free = self._schedule(self._up, self._up_free, data)

    def _pump(self) -> None:
        now = time.monotonic()
        while self._up and self._up[0][0] <= now:
            _, data = self._up.pop(0)
            out = self.board.feed(data)
            if out:
                self.wire_down += len(out)
                self._down_free = self._schedule(self._down, self._down_free, out)

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            self._pump()
            now = time.monotonic()
            if self._down and self._down[0][0] <= now:
                out = bytearray()
                while self._down and self._down[0][0] <= now:
                    out += self._down.pop(0)[1]
                return bytes(out)
            nxt = min([q[0][0] for q in (self._up, self._down) if q] + [deadline])
            if now >= deadline:
                return b""
            time.sleep(max(0.0, min(nxt, deadline) - now))

    def close(self) -> None:
        self._up.clear()
        self._down.clear()


def open_transport(uri: str, **kwargs: Any) -> Transport:
    """`serial:///dev/ttyACM0[?baud=N]`, `socket://host:port`, `rfc2217://...`, `loop://`, `ble://ADDR`."""
    if uri.startswith("ble://"):
        from fedtiny.link.ble import BleTransport

        return BleTransport(uri[len("ble://") :], **kwargs)
    if uri.startswith("serial://"):
        path, _, query = uri[len("serial://") :].partition("?")
        opts = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
        if "baud" in opts:
            kwargs.setdefault("baudrate", int(opts["baud"]))
        return SerialTransport(path, **kwargs)
    if uri.startswith(("socket://", "rfc2217://", "loop://", "/", "COM", "spy://", "alt://", "hwgrep://")):
        return SerialTransport(uri, **kwargs)
    raise LinkError(f"unknown link URI {uri!r}: use serial://PATH, socket://HOST:PORT, ble://ADDR or loop://")
