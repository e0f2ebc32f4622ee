"""After the rounds: rounds.csv, summary.json, the final int8 model, its C header, plots and report; also for an
interrupted run (the rounds done, from the last checkpoint)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedtiny.fleet.data import FLEET_DIR
from fedtiny.plan import RunPlan, data_label
from fedtiny.plan.prepare import BaseMeta, WriterBox
from fedtiny.summary import BaseModelSummary, FleetStats, Summary


def finish_run(plan: RunPlan) -> Summary:
    """Write rounds.csv, summary.json, the final int8 model, its C header and the plot. An interrupted run
    writes the same files for the rounds done (``"complete": false`` in summary.json)."""
    from fedtiny.model.export import export_header
    from fedtiny.model.flatbuffer import write_head
    from fedtiny.report.drift import comparison, drift_metrics
    from fedtiny.report.html import write_report
    from fedtiny.results import (
        accuracy_intervals,
        evaluation_info,
        plot_accuracy,
        write_rounds_csv,
        write_summary,
    )

    out, rows, s = plan.out_dir, plan.server.rows, plan.scenario
    head = plan.server.head
    assert head is not None  # set from the initial head when the server is made
    final = write_head(plan.tflite, head)
    (out / "model_int8.tflite").write_bytes(final)
    export_header(final, out / "model_int8.h")
    write_rounds_csv(rows, out / "rounds.csv")
    if s.output.plots:
        what = f"recorded data '{Path(s.data.path).name}'" if s.data.path else s.task.name
        plot_accuracy(
            rows,
            out / "accuracy.png",
            f"{s.name}: {what}, {s.fleet.devices} devices, {s.strategy.name}",
            plan.layout.segment_starts,
            "devices' test examples, base condition" if s.data.path else "clean factory test set",
        )
    iv = accuracy_intervals(rows)  # every key: rows is not empty
    summary: Summary = {
        "scenario": s.name,
        "task": data_label(s),
        "devices": s.fleet.devices,
        "gateways": plan.layout.gateways,
        "rounds": s.rounds,
        "complete": plan.server.round
        >= s.rounds,  # false: interrupted (Ctrl-C/SIGTERM); --resume continues it
        "rounds_done": plan.server.round,
        "base_model": _base_model(plan.base_meta),
        "initial_accuracy": rows[0].accuracy,
        "final_accuracy": rows[-1].accuracy,
        "final_accuracy_global": rows[-1].accuracy_global,
        "best_accuracy": max(r.accuracy for r in rows),
        "group_accuracy_initial": rows[0].group_accuracy,
        "group_accuracy_final": rows[-1].group_accuracy,
        "initial_accuracy_lo": iv["initial_accuracy_lo"],
        "initial_accuracy_hi": iv["initial_accuracy_hi"],
        "final_accuracy_lo": iv["final_accuracy_lo"],
        "final_accuracy_hi": iv["final_accuracy_hi"],
        "final_accuracy_global_lo": iv["final_accuracy_global_lo"],
        "final_accuracy_global_hi": iv["final_accuracy_global_hi"],
        "group_accuracy_initial_lo": iv["group_accuracy_initial_lo"],
        "group_accuracy_initial_hi": iv["group_accuracy_initial_hi"],
        "group_accuracy_final_lo": iv["group_accuracy_final_lo"],
        "group_accuracy_final_hi": iv["group_accuracy_final_hi"],
        "updates_rejected": plan.server.rejected_total,
        "updates_rejected_reasons": plan.server.rejected_reasons,
        "bytes_down": sum(r.bytes_down for r in rows),
        "bytes_up": sum(r.bytes_up for r in rows),
        "device_budget": plan.base_meta["budget"],
        "wall_seconds": round(time.time() - plan.started, 1),
        "files": ["scenario.resolved.toml", "rounds.csv", "summary.json", "model_int8.tflite", "model_int8.h"]
        + (["accuracy.png"] if s.output.plots else []),
    }
    curves = plan.server.curves
    (out / "curves.json").write_text(json.dumps(curves))
    events = [(e.group, e.at) for e in s.drift if e.group != "fleet"]
    metrics = drift_metrics(curves, events, s.eval.recover)
    summary["drift"] = metrics
    if any(r.labels for r in rows):  # partial labels (the section, or recorded examples without one)
        from dataclasses import asdict

        from fedtiny.report.labels import labels_summary

        pseudo_rows = [r for r in rows if r.labels.get("pseudo_used")] or rows[1:] or rows
        model_acc = sum(r.accuracy for r in pseudo_rows) / len(pseudo_rows)
        summary["labels"] = labels_summary(asdict(s.labels), [r.labels for r in rows], model_acc)
    summary["comparison"] = comparison(metrics, curves)
    summary["fleet_stats"] = fleet_stats(plan)
    summary["energy_j"] = round(sum(r.energy_j for r in rows), 6)
    summary["stragglers"] = sum(r.stragglers for r in rows)
    summary["devices_dropped"] = sum(r.devices_dropped for r in rows)
    summary["evaluation"] = evaluation_info(
        out / FLEET_DIR, s.fleet.test_samples_per_device, min(s.eval.baseline_devices, s.fleet.devices)
    )
    concat_device_log(out)
    summary["wall_seconds"] = round(time.time() - plan.started, 1)
    if s.output.plots:
        summary["files"] += write_report(plan, summary, out)
    write_summary(summary, out / "summary.json")
    return summary


def _base_model(meta: BaseMeta) -> BaseModelSummary:
    """summary.json's ``base_model``: the base model's accuracies and size, and what its meta has of
    ``source``, ``head``, ``central_head_accuracy`` and ``classes`` (in that order)."""
    out: BaseModelSummary = {
        "float_accuracy_clean": meta["float_accuracy"],
        "int8_accuracy_clean": meta["int8_accuracy"],
        "bytes": meta["bytes"],
    }
    if "source" in meta:
        out["source"] = meta["source"]
    if "head" in meta:
        out["head"] = meta["head"]
    if "central_head_accuracy" in meta:
        out["central_head_accuracy"] = meta["central_head_accuracy"]
    if "classes" in meta:
        out["classes"] = meta["classes"]
    return out


def concat_device_log(out: Path) -> None:
    """device_rounds.npz: one row per (round, sampled device): status, virtual time, energy, bytes; per round the
    asleep devices (``asleep_round``, ``asleep_count``, ``awake_bits``); ``status_names`` names the codes."""
    import numpy as np

    from fedtiny.server.fleet_model import STATUS, STATUS_LABELS

    d = out / "device_rounds"
    files = sorted(d.glob("r*.npz")) if d.exists() else []
    if not files:
        return
    parts = [dict(np.load(f)) for f in files]
    labelled = any("labels_used" in p for p in parts)  # partial labels: every row gets the label columns
    for p in parts:
        for k in ("labels_used", "pseudo_used") if labelled else ():
            p.setdefault(k, np.zeros(len(p["round"]), dtype=np.int32))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    names = np.array(STATUS_LABELS if labelled else STATUS)
    np.savez_compressed(out / "device_rounds.npz", status_names=names, **cat)  # type: ignore[arg-type]


def fleet_stats(plan: RunPlan) -> FleetStats:
    import numpy as np

    fd = plan.out_dir / FLEET_DIR
    meta = json.loads((fd / "layout.json").read_text())
    board = np.load(fd / "board.npy")
    group = np.load(fd / "group.npy")
    return {
        "devices": plan.layout.devices,
        "gateways": plan.layout.gateways,
        "devices_per_gateway": plan.layout.devices_per_gateway,
        "boards": {b: int((board == i).sum()) for i, b in enumerate(meta["boards"])},
        "groups": {g: int((group == i).sum()) for i, g in enumerate(plan.layout.groups)},
        "condition_variants": len(meta["conditions"]),
        "faulty_devices": int(np.load(fd / "faulty.npy").sum()),
        "pool_samples": int(np.prod(np.load(fd / "pool_feats.npy", mmap_mode="r").shape[:-1])),
        # the Ray nodes whose gateways did work (each gateway process notes its node: fedtiny/clients/simulated/app.py)
        "ray_nodes": sorted(p.name for p in (fd / "ray_nodes").iterdir())
        if (fd / "ray_nodes").is_dir()
        else [],
    }


def start_writing_interrupted(plan: RunPlan) -> None:
    """Write an interrupted run's results in a thread, so that it overlaps Flower's and Ray's shutdown
    (:func:`run_scenario` waits for it); called by the ServerApp as soon as the rounds stop."""
    import threading

    if plan.stop is not None:
        plan.stop.writing.set()
    box: WriterBox = {}

    def work() -> None:
        try:
            box["summary"] = finish_interrupted(plan)
        except BaseException as exc:  # handed to the main thread by run_scenario
            box["error"] = exc

    thread = threading.Thread(target=work, name="fedtiny-write-results", daemon=True)
    plan.writer = (thread, box)
    thread.start()


def finish_interrupted(plan: RunPlan) -> Summary | None:
    """The results of an interrupted run: the state of its last checkpoint (what ``--resume`` continues),
    else what the server holds; None before round 0 was evaluated."""
    plan.server.load_checkpoint()
    if not plan.server.rows:
        return None
    return finish_run(plan)
