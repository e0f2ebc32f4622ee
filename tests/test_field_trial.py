"""Field trials on Flower's Deployment Engine: a real SuperLink, two SuperNode gateways, virtual boards on
TCP sockets, the link protocol end to end, safe redeploy after every round, final model verified per board."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from clients.board import serve_board
from clients.board.device import BoardConfig
from fedtiny.config import load_scenario
from fedtiny.field import processes as fp
from fedtiny.field.replay import prepare_trial
from fedtiny.field.tls import make_node_key, make_tls
from fedtiny.field.trial import Security, serve, start_gateway
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import open_transport
from fedtiny.model.flatbuffer import read_head

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def boards(tmp_path: Path) -> Iterator[Any]:
    """Start n virtual boards (device ids 1..n) with the trial's base head; yields a starter."""
    stop = threading.Event()

    def start(n: int, base: bytes) -> list[str]:
        uris = []
        for d in range(1, n + 1):
            uri = f"socket://127.0.0.1:{_free_port()}"
            uris.append(uri)
            threading.Thread(target=serve_board, args=(uri, str(tmp_path / f"board{d}.flash"), d, KEY), daemon=True,
                             kwargs=dict(head=read_head(base), cfg=BoardConfig(cache_capacity=200), stop=stop,
                                         ready=lambda _a: None)).start()
        time.sleep(0.5)
        return uris

    yield start
    stop.set()


def _scenario(rounds: int) -> Any:
    return load_scenario(ROOT / "scenarios" / "field_trial.toml", [f"rounds={rounds}"])


def test_three_round_field_trial_two_gateways_four_boards(tmp_path: Path, boards: Any) -> None:
    s = _scenario(3)
    out = tmp_path / "trial"
    base = prepare_trial(s, out, log=lambda *_: None)
    uris = boards(4, base)
    gws: list[Any] = []

    def start_gateways(address: str) -> None:
        for g in range(2):
            gws.append(start_gateway(address, uris[2 * g : 2 * g + 2], out / f"gw{g}", _free_port(), KEY, out / "replay"))

    try:
        summary = serve(s, out, gateways=2, port=_free_port(), on_ready=start_gateways, log=lambda *_: None)
    finally:
        fp.stop(*gws)
    assert summary["rounds_completed"] == 3 and summary["board_errors"] == []
    # every board trained every round, each update counted exactly once
    assert summary["updates_aggregated"] == summary["updates_seen"] == 12
    assert summary["duplicates_ignored"] == 0 and summary["updates_rejected"] == 0
    assert summary["final_accuracy"] > summary["initial_accuracy"] + 0.2
    rows = (out / "rounds.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    final = read_head((out / "model_int8.tflite").read_bytes())
    for uri in uris:  # the final model is on every board, in a confirmed slot
        sess = BoardSession(open_transport(uri), key=KEY)
        try:
            sess.hello()
            assert sess.get_head().equals(final)
            st = sess.status()
            assert st.confirmed == st.active
        finally:
            sess.close()


def test_field_trial_over_tls_with_supernode_authentication(tmp_path: Path, boards: Any) -> None:
    s = _scenario(1)
    out = tmp_path / "trial"
    base = prepare_trial(s, out, log=lambda *_: None)
    uris = boards(2, base)
    tls = make_tls(tmp_path / "tls", ["127.0.0.1"])
    priv, pub = make_node_key(tmp_path / "keys" / "gw0")
    gws: list[Any] = []

    def start_gateways(address: str) -> None:
        gws.append(start_gateway(address, uris, out / "gw0", _free_port(), KEY, out / "replay", ca=tls.ca, auth_key=priv))

    try:
        summary = serve(s, out, gateways=1, port=_free_port(), security=Security(tls, (pub,)),
                        on_ready=start_gateways, log=lambda *_: None)
    finally:
        fp.stop(*gws)
    assert summary["rounds_completed"] == 1 and summary["updates_aggregated"] == 2
    assert json.loads((out / "summary.json").read_text())["board_errors"] == []
