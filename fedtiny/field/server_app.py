"""The ServerApp of a field trial (Flower Deployment Engine). `fedtiny serve` prepared the trial directory."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedtiny.config import load_scenario
from fedtiny.field.server import FieldServer
from fedtiny.model.flatbuffer import read_head, write_head
from fedtiny.model.export import export_header
from fedtiny.report.results import plot_accuracy, write_rounds_csv

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config["out-dir"]))
    scenario = load_scenario(out / "scenario.resolved.toml")
    base = (out / "base_int8.tflite").read_bytes()
    server = FieldServer(scenario, out, read_head(base), int(context.run_config["gateways"]))
    try:
        server.run(grid)
    finally:
        write_results(server, base, out)


def write_results(server: FieldServer, base: bytes, out: Path) -> None:
    final = write_head(base, server.head)
    (out / "model_int8.tflite").write_bytes(final)
    export_header(final, out / "model_int8.h")
    rows = server.rows
    if rows:
        write_rounds_csv(rows, out / "rounds.csv")
        plot_accuracy(rows, out / "accuracy.png", f"field trial: {server.scenario.name}", [])
    summary = {
        "scenario": server.scenario.name,
        "rounds_completed": max(len(rows) - 1, 0),
        "initial_accuracy": rows[0].accuracy if rows else None,
        "final_accuracy": rows[-1].accuracy if rows else None,
        "updates_aggregated": sum(r.devices_trained for r in rows),
        "updates_seen": len(server.seen),
        "duplicates_ignored": server.duplicates,
        "stale_ignored": server.stale,
        "updates_rejected": server.rejected,
        "board_errors": server.board_errors,
        "final_head_sha256": __import__("hashlib").sha256(final).hexdigest(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
