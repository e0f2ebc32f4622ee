"""BoardSession reads paged objects (GET_HEAD, READ_UPDATE) consistently even if the object changes."""

from __future__ import annotations

import struct

from fedtiny.link.messages import BlobRead
from fedtiny.link.session import BoardSession


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def read(self, timeout: float) -> bytes:
        return b""

    def close(self) -> None:
        pass


def test_object_that_changes_between_pages_is_reread_from_offset_zero() -> None:
    old, new = bytes(range(100, 140)), bytes(range(0, 40))
    calls = []

    def fake_request(mtype: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        req = BlobRead.decode(payload)
        calls.append(req.offset)
        obj, uid = (old, 1) if len(calls) == 1 else (new, 2)  # the board replaced its update after page 1
        chunk = obj[req.offset : req.offset + 16]
        return struct.pack("<II", uid, len(obj)) + chunk

    s = BoardSession(_NullTransport())
    s.request = fake_request  # type: ignore[method-assign]
    s.info = None
    uid, data = s._read_blob(0x14, with_id=True)
    assert (uid, data) == (2, new)
    assert calls[:3] == [0, 16, 0]
