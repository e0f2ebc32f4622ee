"""Byte transports behind one small protocol, and `open_transport(uri)` through one registry.

A transport moves raw bytes (COBS frames are the session's business): `write(bytes)`,
`read(timeout) -> bytes` (whatever arrived, b"" on timeout), `close()`.

`TRANSPORTS` maps a URI scheme to its opener, `opener(uri, **kwargs) -> Transport` (the whole URI, scheme
included); a bare device path (`/dev/ttyACM0`, `COM3`) opens as a serial port. Adding a transport is one
class (with a `from_uri`) and one line in `TRANSPORTS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from fedtiny.errors import LinkError


@runtime_checkable
class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class Board(Protocol):
    """A board in this process (fedtiny.clients.board's virtual board): bytes in, its answer out."""

    def feed(self, data: bytes) -> bytes: ...


class SerialTransport:
    """Every URL pyserial accepts: a device path, `socket://host:port`, `rfc2217://`, `loop://`."""

    def __init__(self, url: str, baudrate: int = 115200, **kwargs: Any) -> None:
        import serial

        try:
            self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=10, **kwargs)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from None
        self.url = url

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> SerialTransport:
        """`serial://PATH[?baud=N]` (a device path and its baud rate), or any URL pyserial takes, passed whole."""
        if not uri.startswith("serial://"):
            return cls(uri, **kwargs)
        path, _, query = uri[len("serial://") :].partition("?")
        opts = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
        if "baud" in opts:
            kwargs.setdefault("baudrate", int(opts["baud"]))
        return cls(path, **kwargs)

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
            first: bytes = self.ser.read(1)
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

    def __init__(self, board: Board) -> None:
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
        board: Board,
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


TransportOpener = Callable[..., Transport]
"""`opener(uri, **kwargs) -> Transport`: the whole URI, scheme included; LinkError if it cannot open."""


def _open_ble(uri: str, **kwargs: object) -> Transport:
    from fedtiny.link.ble import BleTransport  # lazy: the BLE stack only for BLE links

    return BleTransport.from_uri(uri, **kwargs)


TRANSPORTS: dict[str, TransportOpener] = {
    "serial": SerialTransport.from_uri,  # serial:///dev/ttyACM0[?baud=N]
    "socket": SerialTransport.from_uri,  # pyserial's URL handlers, the URL passed whole
    "rfc2217": SerialTransport.from_uri,
    "loop": SerialTransport.from_uri,
    "spy": SerialTransport.from_uri,
    "alt": SerialTransport.from_uri,
    "hwgrep": SerialTransport.from_uri,
    "ble": _open_ble,  # ble://ADDR (bleak)
}


def uri_scheme(uri: str) -> str | None:
    """`socket://h:p` -> "socket"; a bare device path (`/dev/ttyACM0`, `COM3`) -> "serial"; else None."""
    scheme, sep, _ = uri.partition("://")
    if sep:
        return scheme
    return "serial" if uri.startswith(("/", "COM")) else None


def open_transport(uri: str, **kwargs: object) -> Transport:
    """Open the transport `uri` names through `TRANSPORTS`: `serial:///dev/ttyACM0[?baud=N]`, `socket://host:port`,
    `rfc2217://...`, `loop://`, `ble://ADDR`, or a device path. LinkError naming the known schemes otherwise."""
    opener = TRANSPORTS.get(uri_scheme(uri) or "")
    if opener is None:
        known = ", ".join(f"{s}://" for s in sorted(TRANSPORTS))
        raise LinkError(
            f"unknown link URI {uri!r}: known schemes are {known}, or a device path (/dev/..., COMn)"
        )
    return opener(uri, **kwargs)
