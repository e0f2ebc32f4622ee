"""DeviceError carries the board's status and the request type as data, not only as text."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

import fedtiny.errors
from fedtiny.clients.board import BoardConfig, VirtualBoard
from fedtiny.errors import DeviceError, FedTinyError
from fedtiny.link.messages import MsgType, Status, TrainRequest
from fedtiny.link.session import BoardSession, device_error
from fedtiny.link.transport import InProcessTransport

KEY = bytes(range(32))


def _session() -> BoardSession:
    s = BoardSession(
        InProcessTransport(VirtualBoard(BoardConfig(device_id=3, fleet_key=KEY))), key=KEY, seed=1
    )
    s.hello()
    return s


def test_error_status_and_type_are_attributes() -> None:
    s = _session()
    with pytest.raises(DeviceError) as e:
        s.read_update()
    err = e.value
    assert err.status == Status.NO_UPDATE and err.status_name == "NO_UPDATE"
    assert err.msg_type == MsgType.READ_UPDATE and err.msg_type_name == "READ_UPDATE"
    assert str(err) == f"READ_UPDATE: NO_UPDATE: {err.detail}" and isinstance(err, FedTinyError)


def test_update_pending_is_a_status_not_a_text() -> None:
    s = _session()
    rng = np.random.default_rng(0)
    s.push_samples(rng.integers(-128, 128, (20, 64)).astype(np.int8), rng.integers(0, 10, 20), clear=True)
    req = TrainRequest(1, 8, 0.01, 0.0, 0.0, 0.0, 1, 1)
    s.train(req)
    with pytest.raises(DeviceError) as e:
        s.train(req)
    assert e.value.status == Status.UPDATE_PENDING and e.value.msg_type == MsgType.TRAIN


def test_unknown_codes_keep_their_numbers() -> None:
    err = device_error(0x30, 200, b"what")
    assert (err.msg_type, err.msg_type_name, err.status, err.status_name) == (0x30, "type 0x30", 200, "200")
    assert str(err) == "type 0x30: 200: what"
    err = device_error(MsgType.UPLOAD_CHUNK, Status.BAD_OFFSET, b"\xffbad")
    assert err.status_name == "BAD_OFFSET" and err.detail == "\ufffdbad"


def test_pickles_with_its_fields() -> None:
    err = pickle.loads(pickle.dumps(device_error(MsgType.TRAIN, Status.UPDATE_PENDING, b"update 3")))
    assert isinstance(err, DeviceError) and err.status == Status.UPDATE_PENDING
    assert str(err) == "TRAIN: UPDATE_PENDING: update 3"


def test_errors_stays_at_the_bottom() -> None:
    """fedtiny/errors.py imports nothing of fedtiny (so nothing of fedtiny.link)."""
    tree = ast.parse(Path(fedtiny.errors.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("fedtiny")]


def test_no_error_text_is_matched_for_a_status() -> None:
    """Code decides on `exc.status`, never on the status name inside the message."""
    root = Path(fedtiny.errors.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for name in Status.__members__:
            assert f'"{name}" in str(' not in text and f'"{name}" not in str(' not in text, (path, name)
