"""Board links are opened through one registry (URI scheme -> opener): fedtiny.link.transport.TRANSPORTS."""

from __future__ import annotations

from typing import Any

import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard
from fedtiny.errors import LinkError
from fedtiny.link import ble
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import (
    TRANSPORTS,
    InProcessTransport,
    SerialTransport,
    Transport,
    open_transport,
    uri_scheme,
)


def test_schemes_and_device_paths() -> None:
    assert uri_scheme("socket://127.0.0.1:7001") == "socket"
    assert uri_scheme("serial:///dev/ttyACM0?baud=9600") == "serial"
    assert uri_scheme("ble://AA:BB:CC:DD:EE:FF") == "ble"
    assert uri_scheme("/dev/ttyUSB0") == "serial" and uri_scheme("COM3") == "serial"
    assert uri_scheme("ttyACM0") is None
    assert {"serial", "socket", "rfc2217", "loop", "ble"} <= set(TRANSPORTS)


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1:1", "ttyACM0", "", "usb://x"])
def test_unknown_scheme_names_the_known_ones(uri: str) -> None:
    with pytest.raises(LinkError, match="unknown link URI") as e:
        open_transport(uri)
    msg = str(e.value)
    assert all(f"{s}://" in msg for s in TRANSPORTS) and "\n" not in msg


def test_pyserial_url_is_passed_whole_and_serial_uri_takes_a_baud_rate() -> None:
    t = open_transport("loop://")
    try:
        assert isinstance(t, SerialTransport) and isinstance(t, Transport) and t.url == "loop://"
        t.write(b"\x01\x02\x03")
        assert t.read(0.5) == b"\x01\x02\x03"
    finally:
        t.close()
    t = open_transport("serial://loop://?baud=9600")
    try:
        assert isinstance(t, SerialTransport) and t.url == "loop://" and t.ser.baudrate == 9600
    finally:
        t.close()


def test_a_device_path_opens_as_a_serial_port() -> None:
    with pytest.raises(LinkError, match="cannot open /dev/fedtiny-no-such-port"):
        open_transport("/dev/fedtiny-no-such-port")


def test_ble_uri_reaches_the_ble_transport_with_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_init(self: ble.BleTransport, address: str, **kwargs: Any) -> None:
        seen.update(address=address, **kwargs)

    monkeypatch.setattr(ble.BleTransport, "__init__", fake_init)
    t = open_transport("ble://AA:BB:CC:DD:EE:FF", connect_timeout=3.0)
    assert isinstance(t, ble.BleTransport)
    assert seen == {"address": "AA:BB:CC:DD:EE:FF", "connect_timeout": 3.0}


def test_a_new_transport_is_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    boards: dict[str, VirtualBoard] = {}

    def open_inproc(uri: str, **_kw: Any) -> Transport:
        dev = int(uri.removeprefix("inproc://"))
        board = boards.setdefault(uri, VirtualBoard(BoardConfig(device_id=dev, fleet_key=bytes(32))))
        return InProcessTransport(board)

    monkeypatch.setitem(TRANSPORTS, "inproc", open_inproc)
    s = BoardSession(open_transport("inproc://42"), seed=1)
    assert s.hello().device_id == 42
    s.close()
