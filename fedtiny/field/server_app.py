"""The ServerApp of a field trial (Flower Deployment Engine). `fedtiny serve` prepared the trial directory.

It writes what a simulation writes (rounds.csv, summary.json, report.html, the final model) plus the boards and
their failures, appends one line per round to progress.jsonl (the progress `fedtiny serve` shows), and tells the
gateways when the trial is over.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import os
import signal
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedtiny.field.deploy_signing import DeploySigner
from fedtiny.field.server import FieldServer
from fedtiny.interrupt import SIGNAL_NAMES, RunInterrupted, StopFile, StoppableGrid
from fedtiny.link.signing import load_private_key
from fedtiny.model.export import export_header
from fedtiny.model.flatbuffer import read_head, write_head
from fedtiny.plan import load_scenario
from fedtiny.results import RoundRow, plot_accuracy
from fedtiny.summary import FieldSummary, SigningSummary

app = ServerApp()

#: RoundRow columns that only a simulation fills (baselines, virtual time, energy): not in a field rounds.csv
SIMULATION_ONLY = (
    "stragglers",
    "virtual_s",
    "energy_j",
    "energy_mj_per_trainer",
    "accuracy_static",
    "accuracy_local",
    "accuracy_personalized",
    "devices_dropped",
)
ERROR_FILE = "serverapp-error.txt"
STOP_FILE = "stop"  # `fedtiny serve` writes it (the signal number) at Ctrl-C/SIGTERM: the rounds stop


def _signer(key_path: str, out: Path) -> DeploySigner | None:
    """The head signer of ``fedtiny serve --signing-key`` (the key never leaves the server)."""
    return DeploySigner(load_private_key(key_path), out) if key_path else None


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.time()
    out = Path(str(context.run_config["out-dir"]))
    scenario = load_scenario(out / "scenario.resolved.toml")
    base = (out / "base_int8.tflite").read_bytes()
    server = FieldServer(
        scenario,
        out,
        read_head(base),
        int(context.run_config["gateways"]),
        timeout_s=float(str(context.run_config.get("timeout-s", 300.0))),
        wait_s=float(str(context.run_config.get("wait-s", 300.0))),
        signer=_signer(str(context.run_config.get("signing-key", "")), out),
        names=_board_names(out, bool(scenario.data.path)),
    )
    # `fedtiny serve` writes STOP_FILE at Ctrl-C/SIGTERM: no exchange with the gateways starts after it
    stop = StopFile(out / STOP_FILE)
    error, stopped = "", 0
    try:
        server.run(cast(Grid, StoppableGrid(grid, stop)))
    except RunInterrupted as exc:
        stopped = exc.signum
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        (out / ERROR_FILE).write_text(error + "\n\n" + traceback.format_exc())
        raise
    finally:
        summary = write_results(server, base, out, started, error, stopped)
        if (
            error or stopped
        ):  # after a normal last round the gateways stop by themselves (no extra message: ~10 s)
            try:  # stopped: sent, not waited for (the driver stops everything once summary.json is written)
                server.end(grid, end_line(summary), wait=not stopped)
            except Exception as exc:  # they also stop when the SuperLink goes away
                print(f"could not tell the gateways that the trial ended: {exc}")


def _board_names(out: Path, recorded: bool) -> dict[int, str]:
    """Recorded data: board i is named by the data's device id it replays."""
    if not recorded:
        return {}
    from fedtiny.field.trial import replay_device_names

    return {i: name for i, name in enumerate(replay_device_names(out, True), start=1)}


def end_line(summary: FieldSummary) -> str:
    acc = [summary["initial_accuracy"], summary["final_accuracy"]]
    accs = " -> ".join("n/a" if a is None else f"{100 * a:.1f}%" for a in acc)
    return (
        f"trial over: {summary['rounds_completed']} of {summary['rounds']} rounds, accuracy on boards {accs}, "
        f"{summary['board_failures']} board failure(s)"
    )


def write_rounds_csv(rows: list[RoundRow], path: Path) -> None:
    """rounds.csv of a field trial: the simulation's columns less those a field trial does not measure."""
    flat = [{k: v for k, v in r.flat().items() if k not in SIMULATION_ONLY} for r in rows]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        for row in flat:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _acc(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def write_results(
    server: FieldServer, base: bytes, out: Path, started: float, error: str = "", stopped: int = 0
) -> FieldSummary:
    """Every result file; summary.json last (written whole: `fedtiny serve` reads it once it exists).
    ``stopped``: the signal that stopped the rounds (0: none)."""
    s = server.scenario
    final = write_head(base, server.head)
    (out / "model_int8.tflite").write_bytes(final)
    export_header(final, out / "model_int8.h")
    rows = server.rows
    boards = sorted(server.boards.values(), key=lambda b: (b.device_id < 0, b.device_id, b.uri))
    summary: FieldSummary = {
        "scenario": s.name,
        "kind": "field trial",
        "rounds": s.rounds,
        "rounds_completed": max(len(rows) - 1, 0),
        "complete": not error and not stopped and len(rows) - 1 == s.rounds,
        "stopped_by": _signal_name(stopped) if stopped else "",
        "gateways": server.gateways,
        "boards": [
            {
                "board": b.key,
                "uri": b.uri,
                "device_id": b.device_id,
                "gateway": b.gateway,
                "trained": b.trained,
                "evaluated": b.evaluated,
                "failures": b.failures,
                "last_error": b.last_error,
                "errors": b.errors,
            }
            for b in boards
        ],
        "board_failures": sum(b.failures for b in boards),
        "boards_failed_every_round": [b.key for b in boards if b.failures and not (b.trained or b.evaluated)],
        "gateway_failures": server.gateway_failures,
        "initial_accuracy": _acc(rows[0].accuracy) if rows else None,
        "final_accuracy": _acc(rows[-1].accuracy) if rows else None,
        "final_accuracy_global": rows[-1].accuracy_global if rows else None,
        "updates_aggregated": sum(r.devices_trained for r in rows),
        "updates_seen": len(server.seen),
        "duplicates_ignored": server.duplicates,
        "stale_ignored": server.stale,
        "updates_rejected": server.rejected,
        "board_errors": server.board_errors,
        "bytes_down": sum(r.bytes_down for r in rows),
        "bytes_up": sum(r.bytes_up for r in rows),
        "wall_seconds": round(time.time() - started, 1),
        "final_head_sha256": hashlib.sha256(final).hexdigest(),
        "error": error,
        "files": ["scenario.resolved.toml", "summary.json", "model_int8.tflite", "model_int8.h"],
    }
    if rows:  # 95% Wilson intervals of the boards' accuracy (the report's headline shows them)
        if summary["initial_accuracy"] is not None:
            summary["initial_accuracy_lo"], summary["initial_accuracy_hi"] = (
                rows[0].accuracy_lo,
                rows[0].accuracy_hi,
            )
        if summary["final_accuracy"] is not None:
            summary["final_accuracy_lo"], summary["final_accuracy_hi"] = (
                rows[-1].accuracy_lo,
                rows[-1].accuracy_hi,
            )
    if server.signer is not None:
        summary["signing"] = signing_summary(server)
    if rows:
        write_rounds_csv(rows, out / "rounds.csv")
        plot_accuracy(
            rows,
            out / "accuracy.png",
            f"field trial: {s.name}",
            [],
            "devices' test examples, base condition" if s.data.path else "clean factory test set",
        )
        summary["files"] += ["rounds.csv", "accuracy.png"]
        try:
            summary["files"] += write_field_report(server, summary, out)
        except Exception as exc:  # the report must not cost the results
            summary["report_error"] = f"{type(exc).__name__}: {exc}"
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    return summary


def signing_summary(server: FieldServer) -> SigningSummary:
    """Heads signed on the server (``serve --signing-key``, ``trial --signed``): the key's id (MCUboot KEYHASH,
    SHA-256 of the public key, what the boards trust), totals, and per round the heads signed with their
    security counters, the boards that verified a signed head and installed it, and the boards that refused one
    (AUTH_FAILED: signature; DOWNGRADE: security counter)."""
    assert server.signer is not None
    per = server.security
    return {
        "key_id": server.signer.key_id,
        "heads_signed": sum(r["heads_signed"] for r in per),
        "verified_by_boards": sum(r["verified_by_boards"] for r in per),
        "refused": sum(r["refused"] for r in per),
        "last_security_counter": max((c for r in per for c in r["security_counters"]), default=0),
        "rounds": per,
    }


def _signal_name(signum: int) -> str:
    try:
        return SIGNAL_NAMES.get(signal.Signals(signum), f"signal {signum}")
    except ValueError:
        return f"signal {signum}"


def boards_html(summary: FieldSummary) -> str:
    """The boards of the trial and their failures (first in the report: a failing board must be seen)."""
    rows = summary["boards"]
    n = summary["board_failures"]
    every = summary["boards_failed_every_round"]
    head = (
        f"<p><b>{n} board failure(s)</b> in {summary['rounds_completed']} rounds"
        + (f"; failed every round: {html.escape(', '.join(every))}" if every else "")
        + ".</p>"
    )
    cols = ["board", "uri", "gateway", "trained", "evaluated", "failures", "last_error"]
    table = (
        "<table><tr>"
        + "".join(f"<th>{c}</th>" for c in cols)
        + "</tr>"
        + "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(_cell(r, c)))}</td>" for c in cols) + "</tr>"
            for r in rows
        )
        + "</table>"
    )
    errors = "".join(f"<li>{html.escape(e)}</li>" for e in summary["board_errors"][:50])
    return f"<h2>Boards</h2>{head}{table}" + (f"<h3>Errors</h3><ul>{errors}</ul>" if errors else "")


def _cell(board: Mapping[str, object], column: str) -> object:
    return board[column]


def write_field_report(server: FieldServer, summary: FieldSummary, out: Path) -> list[str]:
    """The same report.html as a simulation (fedtiny.report.html), with the boards instead of baselines."""
    from fedtiny.ondevice import device_budget
    from fedtiny.plan.prepare import data_label
    from fedtiny.plan.resolve import train_config
    from fedtiny.report.html import write_report

    s = server.scenario
    c, d = server.head.weights.shape
    budget = device_budget(c, d, s.fleet.cache_size, s.fleet.samples_per_device, train_config(s))
    accs = [r.accuracy for r in server.rows]
    plan = SimpleNamespace(
        scenario=s, server=SimpleNamespace(rows=server.rows, curves={"federated": {"all": accs}})
    )
    nan = float("nan")
    a, z = summary["initial_accuracy"], summary["final_accuracy"]
    facts: dict[str, object] = {
        **summary,
        "initial_accuracy": nan if a is None else a,
        "final_accuracy": nan if z is None else z,
        "task": data_label(s),
        "updates_rejected_reasons": {},
        "stragglers": None,  # neither measured in a field trial: left out of the facts
        "energy_j": None,
        # round 0 measures the base model on the factory test set: the report's note on that line needs it
        "base_model": {"int8_accuracy_clean": server.rows[0].accuracy_global} if server.rows else {},
        "fleet_stats": {
            "boards": len(summary["boards"]),
            "gateways": server.gateways,
            "board failures": summary["board_failures"],
        },
        "device_budget": {"ram_bytes": budget.ram_bytes},
        "comparison": [],
        "complete": bool(summary.get("complete", True)),
        "rounds_done": summary["rounds_completed"],
        "resume_command": "",  # a field trial does not resume (the boards have moved on): it is started again
    }
    intro = (
        f"Field trial {s.name}: {len(summary['boards'])} board(s) on {server.gateways} gateway(s), "
        f"{summary['rounds_completed']} of {s.rounds} rounds, {s.strategy.name}. Accuracy of the deployed int8 "
        "model measured on each board's local test data; no baselines in a field trial."
    )
    return write_report(plan, facts, out, intro=intro, extra_html=boards_html(summary), trial=True)
