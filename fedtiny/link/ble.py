"""BLE transports over the Nordic UART Service: `BleTransport` (bleak, real adapters; thin) and
`BumbleTransport` (a Bumble central + a GATT server playing a virtual board, on Bumble's in-process
virtual link: the BLE path without a radio, for tests).

Both carry the same COBS byte stream, cut into ATT_MTU−3 chunks both ways (docs/protocol.md section 8).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from fedtiny.errors import LinkError

if TYPE_CHECKING:
    from fedtiny.link.transport import Board

_T = TypeVar("_T")

NUS_SERVICE = "6E400001-B5A3-F393-E0A9-E50E24DCCA9E"
NUS_RX = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"  # host writes (without response)
NUS_TX = "6E400003-B5A3-F393-E0A9-E50E24DCCA9E"  # device notifies


class _LoopThread:
    """An asyncio loop in a daemon thread; `call(coro)` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.rx: queue.Queue[bytes] = queue.Queue()

    def call(self, coro: Coroutine[object, object, _T], timeout: float = 20.0) -> _T:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
        except Exception as e:
            raise LinkError(f"BLE: {type(e).__name__}: {e}") from None

    def read(self, timeout: float) -> bytes:
        try:
            out = bytearray(self.rx.get(timeout=max(timeout, 0.0)) if timeout > 0 else self.rx.get_nowait())
        except queue.Empty:
            return b""
        while not self.rx.empty():
            out += self.rx.get_nowait()
        return bytes(out)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2)


class BleTransport(_LoopThread):
    """A real board over BLE via bleak (needs an adapter and, on Linux, BlueZ on the D-Bus system bus)."""

    def __init__(self, address: str, mtu_chunk: int | None = None, connect_timeout: float = 15.0) -> None:
        super().__init__()
        from bleak import BleakClient

        self.client = BleakClient(address, timeout=connect_timeout)
        self.call(self._open(), connect_timeout + 5)
        self.chunk = mtu_chunk or max(20, self.client.mtu_size - 3)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> BleTransport:
        """`ble://ADDR` (the adapter's address or, on macOS, the CoreBluetooth UUID)."""
        return cls(uri.removeprefix("ble://"), **kwargs)

    async def _open(self) -> None:
        await self.client.connect()
        await self.client.start_notify(NUS_TX, lambda _c, data: self.rx.put(bytes(data)))

    async def _write(self, data: bytes) -> None:
        for i in range(0, len(data), self.chunk):
            await self.client.write_gatt_char(NUS_RX, data[i : i + self.chunk], response=False)

    def write(self, data: bytes) -> None:
        self.call(self._write(data))

    def close(self) -> None:
        try:
            self.call(self.client.disconnect(), 5)
        finally:
            self.stop()


class BumbleTransport(_LoopThread):
    """Central + peripheral on Bumble's LocalLink; the peripheral's NUS feeds `board.feed(bytes)`."""

    def __init__(self, board: Board, mtu: int = 247) -> None:
        super().__init__()
        self.board = board
        self.call(self._open(mtu), 30)

    async def _open(self, mtu: int) -> None:
        from bumble.controller import Controller
        from bumble.core import UUID
        from bumble.device import Device, Peer
        from bumble.gatt import Characteristic, CharacteristicValue, Service
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.link import LocalLink
        from bumble.transport.common import AsyncPipeSink

        link = LocalLink()  # type: ignore[no-untyped-call]  # bumble's LocalLink has no annotations
        addrs = ["F0:F0:F0:F0:F0:F0", "F1:F1:F1:F1:F1:F1"]
        ctrls = [Controller(f"C{i}", link=link, public_address=a) for i, a in enumerate(addrs)]
        central, periph = (
            Device(address=Address(a), host=Host(c, AsyncPipeSink(c))) for a, c in zip(addrs, ctrls)
        )
        self.notify_q: asyncio.Queue[bytes] = asyncio.Queue()

        def on_write(connection: object, value: bytes) -> None:  # synchronous: keeps frames in order
            out = self.board.feed(bytes(value))
            if out:
                self.notify_q.put_nowait(out)

        self.tx = Characteristic(UUID(NUS_TX), Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"")
        rx: Characteristic[bytes] = Characteristic(
            UUID(NUS_RX),
            Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.WRITE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=on_write),
        )
        periph.add_service(Service(UUID(NUS_SERVICE), [rx, self.tx]))
        self.periph = periph
        await central.power_on()
        await periph.power_on()
        got = asyncio.get_running_loop().create_future()
        periph.once(periph.EVENT_CONNECTION, got.set_result)
        await periph.start_advertising(advertising_interval_min=20, advertising_interval_max=20)
        conn = await central.connect(periph.random_address)
        self.p_conn = await got
        peer = Peer(conn)
        self.mtu = await peer.request_mtu(mtu)
        await peer.discover_services()
        svc = peer.get_services_by_uuid(UUID(NUS_SERVICE))[0]
        await svc.discover_characteristics()
        self.rx_char = svc.get_characteristics_by_uuid(UUID(NUS_RX))[0]
        tx_char = svc.get_characteristics_by_uuid(UUID(NUS_TX))[0]
        await tx_char.subscribe(lambda value: self.rx.put(bytes(value)))
        self.chunk = self.mtu - 3
        self.notifier = asyncio.ensure_future(self._notify_loop())

    async def _notify_loop(self) -> None:
        while True:
            data = await self.notify_q.get()
            for i in range(0, len(data), self.chunk):  # longer notifications are cut silently: chunk them
                await self.periph.notify_subscribers(self.tx, data[i : i + self.chunk])

    async def _write(self, data: bytes) -> None:
        for i in range(0, len(data), self.chunk):
            await self.rx_char.write_value(data[i : i + self.chunk], with_response=False)

    def write(self, data: bytes) -> None:
        self.call(self._write(data))

    async def _shutdown(self) -> None:
        self.notifier.cancel()
        try:
            await self.notifier
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        try:
            self.call(self._shutdown(), 5)
        finally:
            self.stop()
