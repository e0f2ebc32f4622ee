"""Field trials on Flower's Deployment Engine: a real SuperLink, two SuperNode gateways, virtual boards on
TCP sockets, the link protocol end to end, safe redeploy after every round, final model verified per board."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedtiny.clients.board import serve_board
from fedtiny.clients.board.device import BoardConfig
from fedtiny.errors import FedTinyError
from fedtiny.field import processes as fp
from fedtiny.field.replay import prepare_trial
from fedtiny.field.tls import make_node_key, make_tls
from fedtiny.field.trial import (
    PREPARING,
    Security,
    format_boards,
    node_config,
    serve,
    start_gateway,
    wait_for_trial_file,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import open_transport
from fedtiny.model.flatbuffer import read_head
from fedtiny.plan import load_scenario

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
            threading.Thread(
                target=serve_board,
                args=(uri, str(tmp_path / f"board{d}.flash"), d, KEY),
                daemon=True,
                kwargs={
                    "head": read_head(base),
                    "cfg": BoardConfig(cache_capacity=200),
                    "stop": stop,
                    "ready": lambda _a: None,
                },
            ).start()
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
            gws.append(
                start_gateway(
                    address, uris[2 * g : 2 * g + 2], out / f"gw{g}", _free_port(), KEY, out / "replay"
                )
            )

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
        gws.append(
            start_gateway(
                address, uris, out / "gw0", _free_port(), KEY, out / "replay", ca=tls.ca, auth_key=priv
            )
        )

    try:
        summary = serve(
            s,
            out,
            gateways=1,
            port=_free_port(),
            security=Security(tls, (pub,)),
            on_ready=start_gateways,
            log=lambda *_: None,
        )
    finally:
        fp.stop(*gws)
    assert summary["rounds_completed"] == 1 and summary["updates_aggregated"] == 2
    assert json.loads((out / "summary.json").read_text())["board_errors"] == []


# -- issue 13: field trials that work the first time -----------------------------------------------------

VENV_BIN = Path(sys.executable).parent


def _our_processes(marker: str) -> list[str]:
    """Live processes whose command line or environment mentions ``marker`` (a test's temp dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (proc / "environ").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in cmd or marker in env):
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


def _no_processes_left(marker: str, within: float = 10.0) -> None:
    deadline = time.time() + within
    while (left := _our_processes(marker)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"


def test_node_config_quotes_every_string_so_a_one_board_gateway_parses(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    for devices in (
        ["socket://127.0.0.1:7001"],
        ["socket://127.0.0.1:7001", "serial:///dev/ttyACM0?baud=115200"],
    ):
        cfg = node_config(devices, KEY, tmp_path / "my trial" / "replay", tmp_path / "events.jsonl")
        parsed = parse_config_args([cfg])
        assert parsed["devices"] == " ".join(devices)
        assert parsed["fleet-key"] == KEY.hex() and parsed["replay"] == str(
            (tmp_path / "my trial" / "replay").resolve()
        )
    assert (
        fp.config_args({"out-dir": "/a/it's", "gateways": 2, "t": 1.5})
        == 'out-dir="/a/it\'s" gateways=2 t=1.5'
    )


def test_a_failed_child_is_one_line_naming_it_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            ["sh", "-c", "echo starting; echo 'Error: the configuration is invalid' >&2; exit 3"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    proc.wait()
    msg = str(fp.exited("flower-supernode", proc, log))
    assert "\n" not in msg and msg.startswith("flower-supernode exited with code 3")
    assert "the configuration is invalid" in msg and msg.endswith(f"log: {log}")


def test_boards_and_gateways_wait_for_files_serve_is_still_preparing(tmp_path: Path) -> None:
    trial = tmp_path / "field"
    trial.mkdir()
    (trial / PREPARING).write_text(str(os.getpid()))  # a live `fedtiny serve` is preparing
    model = trial / "base_int8.tflite"
    model.write_bytes(b"old")  # even an existing file is not ready while serve prepares

    def prepare() -> None:
        time.sleep(1.5)
        model.write_bytes(b"new")
        (trial / PREPARING).unlink()

    threading.Thread(target=prepare).start()
    said: list[str] = []
    t0 = time.time()
    wait_for_trial_file(model, "model file", log=said.append)
    assert time.time() - t0 >= 1.0 and model.read_bytes() == b"new"
    assert "still preparing" in said[0]
    # nobody prepares and the file never comes: a bounded wait, then one line that says what to do
    with pytest.raises(FedTinyError, match="fedtiny serve SCENARIO"):
        wait_for_trial_file(trial / "replay", "replay directory", log=said.append, grace=0.5)
    # a marker left by a killed serve does not block forever
    (trial / PREPARING).write_text("999999999")
    wait_for_trial_file(model, "model file", log=said.append)


def _fedtiny(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    return subprocess.run(
        [str(VENV_BIN / "fedtiny"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=env,
        check=False,
    )


def test_fedtiny_trial_with_one_board_runs_reports_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "trial"
    res = _fedtiny(
        "trial",
        str(ROOT / "scenarios" / "field_trial.toml"),
        "--boards",
        "1",
        "--out",
        str(out),
        "--set",
        "rounds=1",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "field trial done: 1 rounds" in res.stdout and "device 1" in res.stdout  # the boards table
    assert "0 board failure(s)" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates_aggregated"] == 1 and summary["board_failures"] == 0
    assert [b["board"] for b in summary["boards"]] == ["device 1"]
    # the same report as a simulation, and a rounds.csv with only what a field trial measures
    assert "Boards" in (out / "report.html").read_text() and (out / "costs.png").exists()
    _check_trial_report(out, summary)
    header, *rows = (out / "rounds.csv").read_text().splitlines()
    assert "accuracy_static" not in header and "energy_j" not in header
    cols = header.split(",")
    assert all(int(dict(zip(cols, r.split(",")))["devices_available"]) == 1 for r in rows)
    # logs of every child survive under the trial directory
    for name in ("superlink.log", "flwr-run.log", "board-1.log", "gateway-1.log"):
        assert (out / "logs" / name).stat().st_size > 0, name
    gw = (out / "logs" / "gateway-1.log").read_text()
    assert "capabilities" in gw and "round 1 train: board 1 ok" in gw and "stopping" in gw
    _no_processes_left(str(tmp_path))


def _check_trial_report(out: Path, summary: dict[str, Any]) -> None:
    """A trial's report.html: nothing empty (no per-device histograms, no energy), every caption true, the
    headline's intervals there, the factory-test line explained."""
    import re

    from matplotlib.image import imread

    text = (out / "report.html").read_text()
    assert "report.html" in summary["files"] and not {"groups.png", "fleet.png"} & set(summary["files"])
    assert not (out / "fleet.png").exists() and not (out / "groups.png").exists()
    assert "energy" not in text.split("Inference on the boards")[0].lower()  # neither plot nor fact
    assert "Shaded:" not in text and "Dashed red" not in text and "stragglers" not in text
    a, z = (f"{100 * summary[k]:.1f}%" for k in ("initial_accuracy", "final_accuracy"))
    assert re.search(rf"went from {a} \(\d+\.\d–\d+\.\d\) to <b>{z} \(", text)  # the intervals announced
    assert "95% intervals (Wilson" in text and "comparison subset" not in text
    assert "The dashed line is the clean factory test set" in text  # the line that falls is explained
    for png in ("accuracy.png", "costs.png"):
        assert imread(out / png)[..., :3].std() > 0.05, png  # drawn, not blank


def test_fedtiny_trial_with_three_boards_on_two_gateways_signed_by_the_server(tmp_path: Path) -> None:
    """--signed: boards trust only the trial's public key, the server signs the new head, gateways forward it.
    strategy.fraction 0.67: 2 of the 3 boards train, the ones the simulation's seeded draw picks."""
    import numpy as np

    from fedtiny.clients.board import BoardConfig, VirtualBoard
    from fedtiny.link.signing import key_hash, load_public_key
    from fedtiny.server.fleet_model import sample_devices

    out = tmp_path / "trial"
    res = _fedtiny(
        "trial",
        str(ROOT / "scenarios" / "field_trial.toml"),
        "--boards",
        "3",
        "--gateways",
        "2",
        "--out",
        str(out),
        "--signed",
        "--set",
        "rounds=1",
        "--set",
        "strategy.fraction=0.67",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates_aggregated"] == 2 and summary["board_failures"] == 0
    # the simulation's draw (fedtiny/server/fleet_model.py): board i is its device i - 1
    chosen = {f"device {d + 1}" for d in sample_devices(7, 1, 0.67, 3, np.ones(3, dtype=bool))}
    assert {b["board"] for b in summary["boards"] if b["trained"]} == chosen and len(chosen) == 2
    assert all(b["evaluated"] == 2 for b in summary["boards"])  # every board still measures every head
    header, *rows = (out / "rounds.csv").read_text().splitlines()
    assert dict(zip(header.split(","), rows[1].split(",")))["devices_sampled"] == "2"
    # signed and verified, said on the console and in summary.json
    sig = summary["signing"]
    assert sig["key_id"] == key_hash(load_public_key(out / "keys" / "signing.pub.pem")).hex()
    assert f"heads signed (key {sig['key_id'][:12]}): 2, verified by boards: 3, refused: 0" in res.stdout
    assert [
        (r["round"], r["heads_signed"], r["verified_by_boards"], r["refused"]) for r in sig["rounds"]
    ] == [
        (0, 1, 0, 0),  # the base head: the boards run it already
        (1, 1, 3, 0),  # the new head, redeployed to every board
    ]
    counter = json.loads((out / "security_counter.json").read_text())["security_counter"]
    assert counter > 1_700_000_000  # the clock's seconds: above any earlier trial's counters
    # every board confirmed the server-signed head: its anti-rollback floor is that counter
    for i in (1, 2, 3):
        board = VirtualBoard(BoardConfig(), str(out / "boards" / f"board{i}.flash"))
        assert board.meta.sec_floor == counter == sig["rounds"][-1]["security_counters"][-1]
        assert board.meta.keys == [load_public_key(out / "keys" / "signing.pub.pem")]
    gws = [b["gateway"] for b in summary["boards"]]  # gateway numbers follow the SuperLink's node order
    assert sorted(gws.count(g) for g in set(gws)) == [1, 2] and set(gws) == {1, 2}
    _no_processes_left(str(tmp_path))


def test_a_board_that_fails_every_round_is_shown_counted_and_reported(tmp_path: Path, boards: Any) -> None:
    """One good board and one whose head has the wrong shape (VERIFY: SHAPE_MISMATCH on every redeploy), served by
    `fedtiny gateway` (prints the boards and per-board outcomes, stops by itself at the end of the trial)."""
    from fedtiny.clients.board.device import default_head

    s = _scenario(1)
    out = tmp_path / "trial"
    base = prepare_trial(s, out, log=lambda *_: None)
    good = boards(1, base)[0]
    bad = f"socket://127.0.0.1:{_free_port()}"
    stop = threading.Event()
    threading.Thread(
        target=serve_board,
        args=(bad, str(tmp_path / "bad.flash"), 2, KEY),
        daemon=True,
        kwargs={
            "head": default_head(4, 16, seed=1),
            "cfg": BoardConfig(cache_capacity=200),
            "stop": stop,
            "ready": lambda _a: None,
        },
    ).start()
    (tmp_path / "fleet.key").write_text(KEY.hex())
    gws: list[subprocess.Popen[str]] = []

    def start_gateway_cli(address: str) -> None:
        gws.append(
            subprocess.Popen(
                [
                    str(VENV_BIN / "fedtiny"),
                    "gateway",
                    "--superlink",
                    address,
                    "--device",
                    good,
                    "--device",
                    bad,
                    "--port",
                    str(_free_port()),
                    "--fleet-key-file",
                    str(tmp_path / "fleet.key"),
                    "--replay",
                    str(out / "replay"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )

    said: list[str] = []
    try:
        summary = serve(s, out, gateways=1, port=_free_port(), on_ready=start_gateway_cli, log=said.append)
        gw_out, _ = gws[0].communicate(timeout=60)  # the gateway stops by itself when the trial ends
    finally:
        stop.set()
        for p in gws:
            p.kill()
    assert gws[0].returncode == 0, gw_out
    # the gateway said which boards it drives, and what happened to each every round
    assert "board 1 socket://" in gw_out and "board 2 socket://" in gw_out and "int8 head 4x16" in gw_out
    assert "firmware" in gw_out and "capabilities TRAIN" in gw_out
    assert "round 1 train: board 1 ok" in gw_out and "round 1 train: board 2 FAILED" in gw_out
    assert "SHAPE_MISMATCH" in gw_out and "stopping" in gw_out
    # serve: per-round progress with the failures; the summary counts them; the report shows them
    assert any(line.startswith("round 1/1: accuracy on boards") for line in said)
    assert any("device 2" in line and "SHAPE_MISMATCH" in line for line in said)
    assert summary["board_failures"] == 3  # evaluate round 0, train + evaluate round 1
    assert summary["boards_failed_every_round"] == ["device 2"] and summary["updates_aggregated"] == 1
    table = format_boards(summary)
    assert "SHAPE_MISMATCH" in table and "3 board failure(s); failed every round: device 2" in table
    report = (out / "report.html").read_text()
    assert "3 board failure(s)" in report and "SHAPE_MISMATCH" in report
    # the gateway's logs survive in its directory
    assert (
        out / f"gateway-{gws[0].args[gws[0].args.index('--port') + 1]}" / "logs" / "supernode.log"
    ).exists()


def test_the_readme_field_trial_block_works_as_pasted(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Field trials with boards") :]
    blocks = section.split("```bash\n")
    block = next(b.split("```")[0] for b in blocks[1:] if "fedtiny serve" in b.split("```")[0])
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    res = subprocess.run(
        ["bash", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False
    )
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert "field trial done: 3 rounds" in text and "stopping" in text, text[-3000:]
    summary = json.loads((tmp_path / "runs" / "field" / "summary.json").read_text())
    assert summary["updates_aggregated"] == 6 and summary["board_failures"] == 0
    _no_processes_left(str(tmp_path))
