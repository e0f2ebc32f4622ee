"""HELLO's extension (docs/protocol.md "HELLO -> HelloInfo"): arena_bytes, asked for with the payload byte 1;
the plain HELLO unchanged for hosts that check its exact length; a host falls back on a board that predates it.
The arena with a model running, on both boards: tests/test_firmware.py::test_full_model_and_raw_samples_match_virtual_board."""

from __future__ import annotations

import pytest

from fedtiny.clients.board.device import BoardConfig, VirtualBoard
from fedtiny.clients.board.handlers import HANDLERS
from fedtiny.clients.board.replies import Reply
from fedtiny.errors import DeviceError, ProtocolError
from fedtiny.link.messages import HELLO_EXT, HelloInfo, MsgType
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport

KEY = bytes(range(32))
BASE = (1, 2, 4096, 7, 0x6B, 10, 64, 256, 3, 65536, 0, 4, 1, "board", "fw 1")


def test_hello_info_extension_round_trip() -> None:
    plain = HelloInfo(*BASE).encode()
    assert len(plain) == 34 + 5 + 4 and HelloInfo.decode(plain).arena_bytes is None
    ext = HelloInfo(*BASE, arena_bytes=70_000).encode()
    assert ext == plain + (70_000).to_bytes(4, "little")
    assert HelloInfo.decode(ext) == HelloInfo(*BASE, arena_bytes=70_000)
    # a later extension appends: a host ignores what it does not know
    assert HelloInfo.decode(ext + b"\x01\x02\x03").arena_bytes == 70_000
    with pytest.raises(ProtocolError, match="HelloInfo with extension"):
        HelloInfo.decode(plain + b"\x01\x02")


def test_virtual_board_reports_arena_only_when_asked() -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    s = BoardSession(InProcessTransport(board), key=KEY, seed=3)
    assert s.hello().arena_bytes == 0  # no backbone: no model runs
    # the plain HELLO is the first version's layout, byte for byte
    plain = s.request(MsgType.HELLO)
    assert HelloInfo.decode(plain).arena_bytes is None
    assert s.request(MsgType.HELLO, bytes([HELLO_EXT])) == plain + bytes(4)
    with pytest.raises(DeviceError, match="MALFORMED"):
        s.request(MsgType.HELLO, b"\x02")


def test_host_falls_back_on_a_board_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    new_hello = HANDLERS[MsgType.HELLO]

    def old_hello(b: VirtualBoard, p: bytes) -> Reply:  # the handler before the extension
        if p:
            raise ProtocolError("HELLO takes no payload")
        return new_hello(b, p)

    monkeypatch.setitem(HANDLERS, MsgType.HELLO, old_hello)
    s = BoardSession(InProcessTransport(board), key=KEY, seed=4)
    info = s.hello()
    assert info.arena_bytes is None and info.device_id == board.cfg.device_id


def test_board_name_is_cut_at_64_bytes_as_the_c_board_does() -> None:
    from fedtiny.clients.board import BoardConfig, VirtualBoard
    from fedtiny.link.session import BoardSession
    from fedtiny.link.transport import InProcessTransport

    s = BoardSession(InProcessTransport(VirtualBoard(BoardConfig(board_name="m" * 100))))
    assert s.hello().board_name == "m" * 64
