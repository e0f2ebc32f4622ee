"""FaultyTransport: a seeded fault injector around any transport, for tests.

Faults per byte (both directions): corrupt (flip a random bit), drop; per write/read chunk: duplicate,
truncate, delay. `disconnect_at=N` raises LinkError once the N-th byte passes (counting both ways),
and `disconnect_rate` does so at random; after a disconnect, buffered bytes are lost and
`on_disconnect` (e.g. a board reboot) runs; the next call works again (the link reconnected).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from fedtiny.errors import LinkError
from fedtiny.link.transport import Transport


class FaultyTransport:
    def __init__(
        self,
        inner: Transport,
        seed: int = 0,
        corrupt: float = 0.0,
        drop: float = 0.0,
        duplicate: float = 0.0,
        truncate: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.01,
        disconnect_at: int | None = None,
        disconnect_rate: float = 0.0,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.corrupt, self.drop, self.duplicate, self.truncate = corrupt, drop, duplicate, truncate
        self.delay, self.delay_s = delay, delay_s
        self.disconnect_at, self.disconnect_rate = disconnect_at, disconnect_rate
        self.on_disconnect = on_disconnect
        self.bytes_seen = 0
        self.disconnects = 0
        self.faults = 0

    def _mangle(self, data: bytes) -> bytes:
        r = self.rng
        if not data:
            return data
        if self.corrupt or self.drop:
            out = bytearray()
            for b in data:
                x = r.random()
                if x < self.drop:
                    self.faults += 1
                    continue
                if x < self.drop + self.corrupt:
                    self.faults += 1
                    b ^= 1 << r.randrange(8)
                out.append(b)
            data = bytes(out)
        if self.truncate and r.random() < self.truncate and data:
            self.faults += 1
            data = data[: r.randrange(len(data))]
        if self.duplicate and r.random() < self.duplicate:
            self.faults += 1
            data = data + data
        if self.delay and r.random() < self.delay:
            time.sleep(self.delay_s)
        return data

    def _count(self, n: int) -> None:
        before = self.bytes_seen
        self.bytes_seen += n
        hit = self.disconnect_at is not None and before < self.disconnect_at <= self.bytes_seen
        if hit or (n and self.disconnect_rate and self.rng.random() < self.disconnect_rate):
            self.disconnects += 1
            self.inner.read(0.0)  # bytes in flight are lost
            if self.on_disconnect:
                self.on_disconnect()
            raise LinkError(f"link disconnected after {self.bytes_seen} bytes")

    def write(self, data: bytes) -> None:
        self._count(len(data))
        self.inner.write(self._mangle(data))

    def read(self, timeout: float) -> bytes:
        data = self._mangle(self.inner.read(timeout))
        self._count(len(data))
        return data

    def close(self) -> None:
        self.inner.close()
