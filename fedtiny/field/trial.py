"""`fedtiny serve`, `fedtiny gateway` and `fedtiny trial` as library functions.

Every child process (SuperLink, SuperNode, `flwr run`, virtual boards) writes its log under the trial (or
gateway) directory, and a child that fails is reported in one line naming it and its log.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fedtiny import lifeline
from fedtiny.config import Scenario
from fedtiny.errors import FedTinyError
from fedtiny.field import processes as fp
from fedtiny.field.replay import prepare_trial
from fedtiny.field.tls import TlsFiles
from fedtiny.jsonl import Tail
from fedtiny.link.signing import write_keys
from fedtiny.results import RoundRow
from fedtiny.summary import FieldSummary

if TYPE_CHECKING:
    from fedtiny.clients.gateway.app import BoardEvent, GatewayEvent
    from fedtiny.clients.gateway.boards import BoardOutcome, GatewayBoards
    from fedtiny.field.server import ProgressEvent
    from fedtiny.interrupt import StopSignal

APP_DIR = Path(__file__).resolve().parent / "flwr_app"
PREPARING = ".preparing"  # in the trial directory while `fedtiny serve` writes it (holds serve's pid)
Log = Callable[[str], object]
#: a round's row as it arrives, and the trial's rounds
Progress = Callable[[RoundRow, int], object]


class TrialFailed(FedTinyError):
    """The trial ran but did not succeed; ``summary`` holds what it did (boards, failures) when there is one."""

    def __init__(self, message: str, summary: FieldSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Security:
    """TLS for the SuperLink (CA, certificate, key), optionally SuperNode authentication and image signing."""

    tls: TlsFiles | None = None
    node_public_keys: tuple[Path, ...] = ()
    signing_key: Path | None = None  # Ed25519 private key (PEM): the server signs every head it redeploys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a trial directory that another process is still preparing -------------------------------------------


def _preparing(trial_dir: Path) -> bool:
    """True while a live `fedtiny serve` is writing ``trial_dir`` (a marker left by a killed one is ignored)."""
    try:
        pid = int((trial_dir / PREPARING).read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def wait_for_trial_file(
    path: Path, what: str, log: Log = print, timeout: float = 900.0, grace: float = 60.0
) -> None:
    """Return once ``path`` exists and `fedtiny serve` has finished preparing its directory. Waits up to ``grace``
    seconds for a file nobody is preparing (serve may be starting), up to ``timeout`` while serve prepares."""
    trial = path.parent
    if path.exists() and not _preparing(trial):
        return
    log(f"waiting for {path} ({what}): `fedtiny serve` is still preparing the trial directory")
    t0 = time.time()
    while True:
        busy = _preparing(trial)
        if path.exists() and not busy:
            log(f"{path} is ready (waited {time.time() - t0:.0f} s)")
            return
        waited = time.time() - t0
        if waited > timeout or (not busy and waited > grace):
            raise FedTinyError(
                f"{path}: {what} not found (waited {waited:.0f} s); start `fedtiny serve SCENARIO "
                f"--out {trial}` first, or check the path"
            )
        time.sleep(0.5)


# -- serve ------------------------------------------------------------------------------------------------


class GatewaysMissing(FedTinyError):
    """Not every gateway connected within ``--wait-s`` (one line with the command a gateway runs)."""


WAIT_S = 300.0  # `fedtiny serve --wait-s`: how long the gateways have to connect
STOP_WAIT_S = 8.0  # after Ctrl-C/SIGTERM: how long the ServerApp has to write the results of the rounds done


def gateway_hint(address: str, out: Path, tls: TlsFiles | None = None) -> str:
    """The command a gateway runs to join this trial."""
    ca = f" --root-certificates {tls.ca}" if tls else ""
    return (
        f"fedtiny gateway --superlink {address} --device URI [--device URI ...] --replay {out / 'replay'}{ca} "
        "(its boards: fedtiny emulate or real ones; each gateway on a machine its own --port)"
    )


def serve(
    s: Scenario,
    out: Path,
    gateways: int,
    host: str = "127.0.0.1",
    port: int = 9091,
    security: Security = Security(),
    log: Log = print,
    on_ready: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    watch: Callable[[], None] | None = None,
    gateway_timeout_s: float = 300.0,
    wait_s: float = WAIT_S,
    stop: StopSignal | None = None,
    boards: int = 0,
) -> FieldSummary:
    """Prepare the trial directory (before anything waits on it), start a SuperLink, run the field-trial
    ServerApp until it ends (per-round ``progress``; ``watch`` is called ten times a second and may raise to
    abort), stop the SuperLink and every process it started. Returns the summary; raises TrialFailed (with the
    summary) when the trial failed, GatewaysMissing when not all ``gateways`` connected within ``wait_s``.

    ``stop`` (a :class:`fedtiny.interrupt.StopSignal`): before the SuperLink is up a Ctrl-C/SIGTERM raises at
    once; then the ServerApp is told (the file STOP_FILE) and stops at its next exchange with the gateways,
    writes the results of the rounds done (``"complete": false``) and ends; everything is stopped and
    :class:`fedtiny.interrupt.RunInterrupted` raised with that summary."""
    from fedtiny.field.server_app import STOP_FILE
    from fedtiny.interrupt import RunInterrupted

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stop_file = out / STOP_FILE
    marker = out / PREPARING
    marker.write_text(str(os.getpid()))
    try:
        for old in (
            "summary.json",
            "rounds.csv",
            "report.html",
            "accuracy.png",
            "groups.png",  # an earlier report's figures (this one may draw fewer)
            "costs.png",
            "fleet.png",
            "progress.jsonl",
            "serverapp-error.txt",
            STOP_FILE,
        ):
            (out / old).unlink(missing_ok=True)
        log(f"preparing {out} (base model, replay data)")
        prepare_trial(s, out, log, boards)
    finally:
        marker.unlink(missing_ok=True)
    if stop is not None:  # from now on the ServerApp learns of a stop from this file
        stop.on_first.append(lambda: stop_file.write_text(str(stop.signum)))
    home = out / "flwr-home"
    address = f"{host}:{port}"
    logs = out / "logs"
    fp.write_flwr_config(home, address, security.tls.ca if security.tls else None)
    link_log = logs / "superlink.log"
    link = fp.start_superlink(
        home, host, port, link_log, security.tls, node_auth=bool(security.node_public_keys)
    )
    tail = Tail(out / "progress.jsonl")
    state = {"connected": False, "ready": time.time(), "stopping": 0.0, "written": 0.0, "round": -1}

    def tick() -> None:
        for ev in _progress_events(tail):
            if ev.get("event") == "connected":
                state["connected"] = True
            elif ev.get("event") == "round":
                state["round"] = _round_row(ev["row"]).round
            _show(ev, s.rounds, log, progress)
        if stop is not None and stop.event.is_set():
            if not state["stopping"]:
                state["stopping"] = time.time()
                stop_file.write_text(str(stop.signum))
                if state["round"] < 1:  # no round done: nothing to wait for
                    raise RunInterrupted(stop.signum)
                log("stopping: the ServerApp writes the results of the rounds done")
            summary = _read_summary(out)
            if summary is not None and summary.get("complete") is False:
                state["written"] = state["written"] or time.time()
            if time.time() - state["stopping"] > STOP_WAIT_S or (
                state["written"] and time.time() - state["written"] > 0.5  # the end message sent meanwhile
            ):
                raise RunInterrupted(stop.signum)
            return  # the children are stopped below; `flwr run` ends once the ServerApp has written
        if link.poll() is not None:
            raise fp.exited("flower-superlink", link, link_log)
        if not state["connected"] and time.time() - state["ready"] > wait_s:
            n = tail_connected(out)
            raise GatewaysMissing(
                f"{n} of {gateways} gateway(s) connected within {wait_s:.0f} s (--wait-s); each gateway runs: "
                + gateway_hint(address, out, security.tls)
            )
        if watch:
            watch()

    run_log = logs / "flwr-run.log"
    try:
        for pub in security.node_public_keys:
            fp.flwr(home, "supernode", "register", str(pub), fp.FEDERATION)
        log(
            f"SuperLink ready at {address}{' (TLS)' if security.tls else ''}; waiting for {gateways} gateway(s) "
            f"(up to {wait_s:.0f} s)"
        )
        if on_ready:
            on_ready(address)
        state["ready"] = time.time()
        if stop is not None:
            stop.raise_now = False  # tick() sees the stop and ends the rounds in order
            if stop.event.is_set():
                stop_file.write_text(str(stop.signum))
        # generous: a field round over slow links can take minutes; the ServerApp has its own timeouts
        result = fp.run_app(
            home,
            APP_DIR,
            {
                "out-dir": str(out),
                "gateways": gateways,
                "timeout-s": gateway_timeout_s,
                "wait-s": wait_s + 60.0,  # the driver's wait (tick) ends first, with the hint
                "signing-key": str(security.signing_key.resolve()) if security.signing_key else "",
            },
            timeout=600.0 + 600.0 * s.rounds,
            log=run_log,
            tick=tick,
            stopped=lambda: stop is not None and stop.event.is_set(),
        )
    except RunInterrupted as exc:
        exc.summary = _read_summary(out)
        raise
    finally:
        fp.stop(link)  # and SuperExec, flwr-serverapp (sessions of their own)
        if stop is not None:
            stop.raise_now = True
    summary_file = out / "summary.json"
    summary = _read_summary(out)
    if result.get("stopped"):
        raise RunInterrupted(stop.signum if stop is not None else 2, summary)
    err_file = out / "serverapp-error.txt"
    if err_file.exists():
        first = err_file.read_text().splitlines()[0]
        raise TrialFailed(f"the ServerApp failed: {first}; log: {run_log}", summary)
    if summary is None:
        raise TrialFailed(f"the field trial ended without results (run {result['run_id']}); log: {run_log}")
    if summary["rounds_completed"] != s.rounds or not result["completed"]:
        raise TrialFailed(
            f"the field trial stopped after {summary['rounds_completed']} of {s.rounds} rounds "
            f"(run {result['run_id']}); log: {run_log}",
            summary,
        )
    if not summary["updates_aggregated"]:
        raise TrialFailed(
            f"no board update was aggregated in {s.rounds} round(s): every board failed "
            f"({summary['board_failures']} failures, see the table and {summary_file})",
            summary,
        )
    return summary


def replay_device_names(out: Path, recorded: bool = True) -> list[str]:
    """The devices a trial directory replays, in board order (board i replays ``replay/device_i.npz``): the
    data's device ids with recorded data (OUT/fleet/layout.json), "device i" otherwise."""
    n = len(list((out / "replay").glob("device_*.npz")))
    if not recorded:
        return [f"device {i}" for i in range(1, n + 1)]
    try:
        names = [str(x) for x in json.loads((out / "fleet" / "layout.json").read_text())["device_names"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    return names[:n] if len(names) >= n else [f"device {i}" for i in range(1, n + 1)]


def _read_summary(out: Path) -> FieldSummary | None:
    try:
        summary: FieldSummary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary


def tail_connected(out: Path) -> int:
    """How many gateways the ServerApp last saw connected (its "waiting" events in progress.jsonl)."""
    n = 0
    for ev in _progress_events(Tail(out / "progress.jsonl")):
        if ev.get("event") in ("waiting", "connected"):
            n = int(ev.get("connected", ev.get("gateways", 0)))
    return n


def _progress_events(tail: Tail) -> list[ProgressEvent]:
    """The lines appended to progress.jsonl since the last call (:meth:`fedtiny.field.server.FieldServer.event`
    writes them)."""
    return cast("list[ProgressEvent]", tail.records())


def _round_row(row: Mapping[str, object]) -> RoundRow:
    """A round event's row back as the :class:`RoundRow` it was written from (``dataclasses.asdict``)."""
    return RoundRow(**cast(Any, row))


def _show(ev: ProgressEvent, rounds: int, log: Log, progress: Progress | None) -> None:
    if ev.get("event") == "waiting" and 0 < ev.get("connected", 0) < ev["gateways"]:
        log(f"{ev['connected']} of {ev['gateways']} gateways connected")
    elif ev.get("event") == "connected":
        log(
            f"{ev['gateways']} of {ev['gateways']} gateways connected; round 0 measures the base model on the boards"
        )
    elif ev.get("event") == "round":
        row = _round_row(ev["row"])
        fails = ev.get("failures", [])
        if progress:
            progress(row, rounds)
        else:
            log(
                f"round {row.round}/{rounds}: accuracy on boards {_pct(row.accuracy)} (factory test "
                f"{_pct(row.accuracy_global)}), {row.devices_trained} update(s) aggregated, {len(fails)} failure(s)"
            )
        for f in fails[:10]:
            log(f"round {row.round}: {f}")
        if len(fails) > 10:
            log(f"round {row.round}: ... and {len(fails) - 10} more failure(s)")


def _pct(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def signing_line(summary: FieldSummary) -> str:
    """One console line on the signed heads of a trial ("" when heads were not signed)."""
    s = summary.get("signing")
    if not s:
        return ""
    return (
        f"heads signed (key {s['key_id'][:12]}): {s['heads_signed']}, "
        f"verified by boards: {s['verified_by_boards']}, refused: {s['refused']}"
    )


def format_boards(summary: FieldSummary) -> str:
    """The table `fedtiny serve` ends with: every board, what it did, how often it failed and why."""
    rows = [("board", "link", "gw", "trained", "evaluated", "failures", "last error")]
    for b in summary.get("boards", []):
        rows.append(
            (
                b["board"],
                b["uri"],
                str(b["gateway"]),
                str(b["trained"]),
                str(b["evaluated"]),
                str(b["failures"]),
                b["last_error"][:100],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]).rstrip() for r in rows]
    n = summary.get("board_failures", 0)
    every = summary.get("boards_failed_every_round", [])
    lines.append(f"{n} board failure(s)" + (f"; failed every round: {', '.join(every)}" if every else ""))
    if summary.get("gateway_failures"):
        lines.append(f"{summary['gateway_failures']} gateway failure(s): see summary.json board_errors")
    return "\n".join(lines)


# -- gateway ----------------------------------------------------------------------------------------------


def node_config(
    devices: list[str], fleet_key: bytes | None, replay: Path | None, events: Path | None = None
) -> str:
    """The SuperNode's ``--node-config``: every string quoted (one unquoted URI does not parse)."""
    values = {"devices": " ".join(devices)}
    if fleet_key:
        values["fleet-key"] = fleet_key.hex()
    if replay:
        values["replay"] = str(replay.resolve())
    if events:
        values["events"] = str(events.resolve())
    return fp.config_args(values)


def supernode_log(home: Path, port: int) -> Path:
    return home / "logs" / f"supernode-{port}.log"


def start_gateway(
    superlink: str,
    devices: list[str],
    home: Path,
    port: int,
    fleet_key: bytes | None = None,
    replay: Path | None = None,
    ca: Path | None = None,
    auth_key: Path | None = None,
    events: Path | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a SuperNode whose ClientApp drives ``devices``; returns the process (stop with processes.stop).
    Its log is ``log_file`` (default ``supernode_log(home, port)``)."""
    if not devices:
        raise FedTinyError("a gateway needs at least one --device URI")
    return fp.start_supernode(
        home,
        superlink,
        port,
        node_config(devices, fleet_key, replay, events),
        log_file or supernode_log(home, port),
        ca,
        auth_key,
    )


def _board_line(o: BoardOutcome) -> str:
    who = f"board {o.device_id}" if o.device_id >= 0 else "board ?"
    if o.error:
        return f"  {who} {o.uri}: NOT REACHABLE: {o.error}"
    u = o.update
    return (
        f"  {who} {o.uri}: {u['board']} firmware {u['firmware']} (protocol {u['protocol']}), "
        f"capabilities {u['capabilities']}, model {u['model']}, sample cache {u['cache']}"
    )


def describe_boards(boards: GatewayBoards, log: Log, wait_s: float) -> list[BoardOutcome]:
    """Each board's identity, waiting up to ``wait_s`` for boards that are still starting."""
    t0, said = time.time(), False
    while True:
        found = boards.describe()
        missing = [o for o in found if o.error]
        if not missing or time.time() - t0 > wait_s:
            return list(found)
        if not said:
            log(
                f"gateway: waiting up to {wait_s:.0f} s for {len(missing)} board(s) to answer: "
                + ", ".join(o.uri for o in missing)
            )
            said = True
        time.sleep(1.0)


def _gateway_events(tail: Tail) -> list[GatewayEvent]:
    """The lines appended to the gateway's events file since the last call (the gateway's ClientApp writes
    them: :func:`fedtiny.clients.gateway.app._event`)."""
    return cast("list[GatewayEvent]", tail.records())


def _outcome_line(ev: GatewayEvent, b: BoardEvent) -> str:
    who = f"board {b['device_id']}" if b["device_id"] >= 0 else b["uri"]
    if b.get("error"):
        return f"round {ev['round']} {ev['event']}: {who} FAILED: {b['error']}"
    if "num_examples" in b:
        return f"round {ev['round']} train: {who} ok ({b['num_examples']} samples, loss {b['loss']:.3f}, update {b['update_id']})"
    if "n" in b:
        acc = b["correct"] / b["n"] if b["n"] else float("nan")
        return f"round {ev['round']} evaluate: {who} ok (accuracy {_pct(acc)} on {b['n']} samples)"
    return f"round {ev['round']} {ev['event']}: {who} ok"


class _Reachability:
    """Whether the SuperLink's port accepts connections (checked at most every ``every`` seconds): a gateway stops
    once the SuperLink closes after the last round, or when it went away mid-trial (serve stopped or was killed)."""

    def __init__(self, address: str, every: float = 3.0) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.every = host.strip("[]"), int(port), every
        self.seen = False
        self.up = True
        self.last_ok = self.last_check = 0.0

    def check(self) -> bool:
        now = time.time()
        if now - self.last_check >= self.every:
            self.last_check = now
            try:
                with socket.create_connection((self.host, self.port), timeout=2):
                    self.seen, self.up, self.last_ok = True, True, now
            except OSError:
                self.up = False
        return self.up

    def gone_for(self) -> float:
        self.check()
        return time.time() - self.last_ok if self.seen and not self.up else 0.0


def run_gateway(
    superlink: str,
    devices: list[str],
    out: Path,
    port: int,
    fleet_key: bytes | None = None,
    replay: Path | None = None,
    ca: Path | None = None,
    auth_key: Path | None = None,
    log: Log = print,
    board_wait_s: float = 120.0,
    superlink_gone_s: float = 60.0,
) -> int:
    """Foreground `fedtiny gateway`: print the boards, run a SuperNode for them, print each round's per-board
    outcome, and stop when the trial ends (0), the SuperNode fails (FedTinyError naming its log) or on
    Ctrl-C/SIGTERM (SystemExit: the SuperNode and its children are stopped)."""
    from fedtiny.clients.gateway.boards import GatewayBoards, Replay

    out = out.resolve()
    if replay is not None:
        wait_for_trial_file(replay, "replay directory", log)
    found = describe_boards(
        GatewayBoards(devices, fleet_key, Replay(replay) if replay else None), log, board_wait_s
    )
    log(f"gateway: {len(found)} board(s)")
    for o in found:
        log(_board_line(o))
    events = out / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    events.write_text("")
    sn_log = out / "logs" / "supernode.log"
    proc = start_gateway(
        superlink, devices, out / "flwr-home", port, fleet_key, replay, ca, auth_key, events, sn_log
    )
    log(f"gateway: SuperNode started for SuperLink {superlink} (log: {sn_log})")
    tail = Tail(events)
    link = _Reachability(superlink)
    last_at = 0.0  # when this gateway answered the last round's evaluate
    try:
        while True:
            if last_at and (not link.check() or time.time() - last_at > 300):
                log("gateway: the trial is over (the server closed it); stopping")
                return 0
            if link.gone_for() > superlink_gone_s:
                raise FedTinyError(
                    f"the SuperLink at {superlink} has been unreachable for {superlink_gone_s:.0f} s "
                    f"(did `fedtiny serve` stop?); stopping the gateway (log: {sn_log})"
                )
            for ev in _gateway_events(tail):
                if ev.get("event") == "end":
                    log(f"gateway: {ev.get('summary') or 'trial over'}; stopping")
                    return 0
                for b in ev.get("boards", []):
                    log(_outcome_line(ev, b))
                if ev.get("last"):
                    last_at = time.time()
                    link.every = 1.0
                    log(
                        f"gateway: round {ev['round']} was the last; stopping when the server closes the trial"
                    )
            if proc.poll() is not None:
                raise fp.exited("flower-supernode", proc, sn_log)
            time.sleep(0.5)
    finally:
        fp.stop(proc)


# -- a whole trial on one machine -------------------------------------------------------------------------


def run_trial(
    s: Scenario,
    boards: int,
    out: Path,
    gateways: int = 1,
    log: Log = print,
    progress: Progress | None = None,
    signed: bool = False,
    stop: StopSignal | None = None,
) -> FieldSummary:
    """`fedtiny trial`: serve + ``boards`` virtual boards (`fedtiny emulate` on loopback sockets) + ``gateways``
    gateways (`fedtiny gateway`), each a child process logging to OUT/logs; every one stopped at the end.
    With recorded data the boards replay the first ``boards`` devices of the data (board i: its i-th device).
    ``signed``: a fresh Ed25519 key in OUT/keys; the boards trust only its public key and the server signs
    every redeployed head with it (the gateways hold no private key). ``stop``: as :func:`serve`."""
    if boards < 1 or gateways < 1 or gateways > boards:
        raise FedTinyError(
            f"--boards must be >= 1 and --gateways between 1 and --boards (got {boards}, {gateways})"
        )
    if s.fleet.devices != boards:
        raise FedTinyError(f"the scenario has fleet.devices = {s.fleet.devices}, the trial {boards} boards")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / "fleet.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    if signed:  # a fresh key per trial, as the boards below are fresh
        shutil.rmtree(out / "keys", ignore_errors=True)
    keys = write_keys(out / "keys") if signed else {}
    trust = ["--trust-key", str(keys["public"])] if signed else []
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(name: str, args: list[str], log_file: Path) -> None:
        lifeline.guard()  # the child and all it starts carry this process's lifeline mark
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as fh:
            p = subprocess.Popen(
                [sys.executable, "-m", "fedtiny.cli", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=lifeline.pdeathsig(),  # SIGKILL when the trial dies; what it started: the watchdog
            )
        children.append((name, p, log_file))

    def on_ready(address: str) -> None:
        names = replay_device_names(out, bool(s.data.path))
        if len(names) < boards:
            raise FedTinyError(
                f"--boards {boards}: the data has {len(names)} device(s); start at most {len(names)} boards"
            )
        uris = []
        for i in range(1, boards + 1):
            uri = f"socket://127.0.0.1:{free_port()}"
            uris.append(uri)
            state = out / "boards" / f"board{i}.flash"
            state.parent.mkdir(parents=True, exist_ok=True)
            state.unlink(missing_ok=True)  # a fresh board: last trial's head would not be this trial's base
            spawn(
                f"board {i} (fedtiny emulate)",
                [
                    "emulate",
                    "--listen",
                    uri,
                    "--device-id",
                    str(i),
                    "--state",
                    str(state),
                    "--fleet-key-file",
                    str(key_file),
                    "--model",
                    str(out / "base_int8.tflite"),
                    *trust,
                ],
                out / "logs" / f"board-{i}.log",
            )
        log(f"started {boards} virtual board(s) on {', '.join(uris)}")
        for g in range(gateways):
            args = [
                "gateway",
                "--superlink",
                address,
                "--port",
                str(free_port()),
                "--fleet-key-file",
                str(key_file),
                "--replay",
                str(out / "replay"),
                "--out",
                str(out / "gateways" / f"gw{g + 1}"),
            ]
            for uri in uris[g::gateways]:
                args += ["--device", uri]
            spawn(f"gateway {g + 1} (fedtiny gateway)", args, out / "logs" / f"gateway-{g + 1}.log")
        log(f"started {gateways} gateway(s); logs in {out / 'logs'}")

    def watch() -> None:
        for name, p, log_file in children:
            if p.poll() not in (None, 0):
                raise fp.exited(name, p, log_file)

    try:
        summary = serve(
            s,
            out,
            gateways,
            port=free_port(),
            security=Security(signing_key=keys.get("private")),
            log=log,
            on_ready=on_ready,
            progress=progress,
            watch=watch,
            stop=stop,
            boards=boards,
        )
        deadline = (
            time.time() + 30
        )  # the gateways stop by themselves once the ServerApp says the trial is over
        for name, p, log_file in children:
            if name.startswith("gateway"):
                try:
                    p.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    log(
                        f"{name} did not stop by itself at the end of the trial; stopping it (log: {log_file})"
                    )
        return summary
    finally:  # stopped (Ctrl-C): no need to wait for the boards and gateways to end in order
        fp.stop(
            *(p for _, p, _ in children), timeout=2.0 if stop is not None and stop.event.is_set() else 15.0
        )
