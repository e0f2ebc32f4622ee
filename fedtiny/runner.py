"""Run a scenario end to end: model → fleet data → Flower rounds on the Simulation Engine → results.

Library functions; the CLI (`fedtiny run`) is a thin layer over :func:`run_scenario`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedtiny.config import Scenario, scenario_to_toml
from fedtiny.config.derived import train_config
from fedtiny.errors import ModelError
from fedtiny.fleet.boards import check_fits, get_board
from fedtiny.fleet.data import FLEET_DIR, FleetLayout, layout_of, model_spec_of, prepare_fleet
from fedtiny.ondevice import device_budget

Log = Callable[[str], Any]


@dataclass
class RunPlan:
    scenario: Scenario
    out_dir: Path
    tflite: bytes
    layout: FleetLayout
    base_meta: dict[str, Any]
    server: Any  # FleetServer
    started: float = field(default_factory=time.time)
    error: BaseException | None = None
    stop: Any = None  # fedtiny.interrupt.StopSignal: Ctrl-C/SIGTERM stop the rounds at the next exchange
    writer: Any = (
        None  # (thread, result box) writing an interrupted run's results (start_writing_interrupted)
    )


def check_budget(s: Scenario, num_classes: int, dim: int) -> dict[str, int]:
    """RAM/MAC bill of one device; BudgetError if a board of the fleet cannot hold it."""
    t = s.train
    cfg = train_config(s)
    b = device_budget(num_classes, dim, s.fleet.cache_size, s.fleet.cache_size, cfg)
    for name in list(s.fleet.boards) or [s.fleet.board]:
        check_fits(
            get_board(name),
            b.ram_bytes,
            f"a {num_classes}x{dim} head with a {s.fleet.cache_size}-sample cache (batch {t.batch_size})",
        )
    return {
        "ram_bytes": b.ram_bytes,
        "cache_bytes": b.cache_bytes,
        "train_macs": b.train_macs,
        "infer_macs": b.infer_macs,
    }


def data_label(s: Scenario) -> str:
    """What the fleet's data is, in a few words (results and plot titles)."""
    return f"data {Path(s.data.path).name}" if s.data.path else s.task.name


def _base_model(s: Scenario, log: Log) -> tuple[bytes, dict[str, Any]]:
    """The int8 model to deploy for generated data: the user's (.tflite or Keras, scored on the task's clean
    factory test set) or the task's reference model."""
    from fedtiny.model.build import build_base_model, factory_data

    spec = model_spec_of(s)
    if not (s.model.tflite or s.model.keras):
        base = build_base_model(spec, log)
        return base.tflite, dict(base.meta)
    from fedtiny.model.runtime import Int8Runner
    from fedtiny.model.user import convert_keras, load_tflite

    if s.model.tflite:
        um = load_tflite(s.model.tflite)
    else:
        rep, _ = factory_data(spec, spec.representative_samples, 0)
        um = convert_keras(s.model.keras, rep, log)
    import numpy as np

    from fedtiny.tasks import get_task

    task = get_task(s.task.name, **s.task.params)
    want, got = tuple(um.io.input_shape[1:]), tuple(task.input_shape)
    if int(np.prod(want)) != int(np.prod(got)) or um.num_classes != task.num_classes:
        raise ModelError(
            f"{um.source}: the model takes {list(want)} and has {um.num_classes} outputs; task '{s.task.name}' "
            f"gives {list(got)} inputs of {task.num_classes} classes (for your own data use [data] path)"
        )
    xt, yt = factory_data(spec, spec.test_samples, 1)
    int8_acc = float((Int8Runner(um.tflite, "tflm").predict(xt) == yt).mean())
    float_acc = float((um.float_predict(xt) == yt).mean()) if um.float_predict is not None else None
    meta = {"float_accuracy": float_acc, "int8_accuracy": int8_acc, "bytes": len(um.tflite),
            "source": str(um.source), "head": um.io.head_path}  # fmt: skip
    return um.tflite, meta


def _prepare_user_data(
    s: Scenario, out_dir: Path, log: Log, resume: bool
) -> tuple[Scenario, bytes, FleetLayout, dict[str, Any]]:
    """A user's recordings: load them, take (or convert) the model, build the fleet of the data's devices."""
    from fedtiny.fleet.user_data import load_user_model_and_data, prepare_user_fleet

    saved = out_dir / "base_int8.tflite"
    if resume and saved.exists() and (out_dir / FLEET_DIR / "layout.json").exists():
        return s, saved.read_bytes(), layout_of(s), json.loads((out_dir / "base_meta.json").read_text())
    rec, um = load_user_model_and_data(s, log)
    uf = prepare_user_fleet(s, rec, um.tflite, out_dir, log, um.float_predict)
    meta = {
        "float_accuracy": uf.float_accuracy,
        "int8_accuracy": uf.int8_accuracy,
        "bytes": len(um.tflite),
        "source": str(um.source),
        "head": um.io.head_path,
        "classes": list(rec.classes),
        "devices": list(uf.device_names),
        "central_head_accuracy": uf.central_accuracy,
    }
    saved.write_bytes(um.tflite)
    (out_dir / "base_meta.json").write_text(json.dumps(meta, indent=1))
    return uf.scenario, um.tflite, uf.layout, meta


def prepare_run(
    s: Scenario,
    out_dir: Path,
    log: Log = print,
    progress: Any = None,
    resume: bool = False,
    stop_after: int = 0,
) -> RunPlan:
    """Everything before the first round, in the driver: base model, fleet features, resolved scenario.

    With ``resume``, the fleet data and the last checkpoint under ``out_dir`` are reused.
    """
    from fedtiny.fleet.data import layout_of
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.server.fleet_server import FleetServer

    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in (out_dir / "checkpoint").glob("*") if (out_dir / "checkpoint").exists() else []:
            old.unlink()
        for old in (out_dir / "device_rounds").glob("*.npz") if (out_dir / "device_rounds").exists() else []:
            old.unlink()
    if s.data.path:
        s, tflite, layout, base_meta = _prepare_user_data(s, out_dir, log, resume)
    else:
        tflite, base_meta = _base_model(s, log)
        if (
            resume
            and (out_dir / FLEET_DIR / "layout.json").exists()
            and (out_dir / FLEET_DIR / "speed.npy").exists()
        ):
            layout = layout_of(s)
        else:
            from fedtiny.model.flatbuffer import model_io, read_tail

            layout = prepare_fleet(
                s,
                tflite,
                out_dir,
                log=log,
                tail=read_tail(tflite).to_list(),
                per_tensor=model_io(tflite).per_tensor,
            )
    if not resume:
        (out_dir / "scenario.resolved.toml").write_text(scenario_to_toml(s))
    head = read_head(tflite)
    budget = check_budget(s, head.num_classes, head.num_features)
    meta = {**base_meta, "budget": budget}
    server = FleetServer(
        s, layout, out_dir / FLEET_DIR, head, progress=progress, out_dir=out_dir, stop_after=stop_after
    )
    if resume:
        if server.load_checkpoint():
            log(f"resume: continuing after round {server.round} of {s.rounds}")
        else:
            log("resume: no checkpoint found, starting from round 1")
    return RunPlan(s, out_dir, tflite, layout, meta, server)


def _block_tensorflow() -> None:
    """Ray worker setup hook: gateways never need TensorFlow (saves ~450 MB and ~3 s per worker); Flower's
    "Manually terminating ClientAppActor" warning (one per gateway on every stop, Ctrl-C included) is dropped."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    logging.getLogger("flwr").addFilter(lambda record: "Manually terminating" not in record.getMessage())


def simulate(plan: RunPlan, log: Log = print, ray_address: str = "", stop: Any = None) -> None:
    """Run the rounds on Flower's Simulation Engine (Ray), one Flower node per gateway.

    ``stop`` (a :class:`fedtiny.interrupt.StopSignal`): a Ctrl-C or SIGTERM ends the rounds at the next exchange
    with the gateways and raises :class:`fedtiny.interrupt.RunInterrupted` once Flower and Ray are down.
    """
    plan.stop = stop
    if plan.scenario.runtime.engine == "inline":
        from clients.simulated.gateway import handle
        from fedtiny.interrupt import stoppable_handler
        from fedtiny.server.transports import InlineTransport

        if stop is not None:
            stop.raise_now = False
        plan.server.run(InlineTransport(stoppable_handler(handle, stop) if stop is not None else handle))
        return
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's driver installs absl's failure signal handler, which prints "*** SIGTERM received ... PC: @" on a
    # plain SIGTERM; fedtiny handles SIGTERM itself (fedtiny.interrupt)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    os.environ.setdefault(
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0"
    )  # no GPUs here; silences Ray's FutureWarning
    import ray
    from flwr.simulation import run_simulation

    # fedtiny calls run_simulation on purpose (its driver keeps TensorFlow out of the Ray workers): Flower's
    # deprecation notice for it is noise to a fedtiny user
    logging.getLogger("flwr").addFilter(
        lambda record: "`run_simulation` function is deprecated" not in record.getMessage()
    )

    from clients.simulated.app import app as client_app
    from fedtiny.server.app import make_server_app

    rt = plan.scenario.runtime
    address = ray_address or rt.ray_address or os.environ.get("RAY_ADDRESS", "")
    started_ray = not ray.is_initialized()
    if started_ray:  # Flower only calls ray.init when Ray is not up yet: we set the worker environment
        pythonpath = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
        runtime_env = {
            "worker_process_setup_hook": "fedtiny.runner._block_tensorflow",
            "env_vars": {"PYTHONPATH": pythonpath, "FLWR_TELEMETRY_ENABLED": "0"},
        }
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": os.cpu_count() or 2}
    try:
        if started_ray:
            ray.init(runtime_env=runtime_env, include_dashboard=False, logging_level=logging.ERROR, **kwargs)
        if stop is not None:
            stop.install()  # ray.init replaced the SIGTERM handler
            stop.raise_now = (
                False  # the server thread stops at its next exchange (fedtiny.interrupt.StoppableGrid)
            )
            stop.check()  # a signal during ray.init
        run_simulation(
            server_app=make_server_app(plan),
            client_app=client_app,
            num_supernodes=plan.layout.gateways,
            backend_config={"client_resources": {"num_cpus": rt.cpus_per_gateway, "num_gpus": 0.0}},
        )
    finally:
        if started_ray:
            ray.shutdown()
    if stop is not None:
        stop.check()
    if plan.error is not None:
        raise plan.error
    if plan.server.round != plan.scenario.rounds:
        raise RuntimeError(
            f"the simulation stopped after {len(plan.server.rows) - 1} of {plan.scenario.rounds} rounds"
        )


def finish_run(plan: RunPlan) -> dict[str, Any]:
    """Write rounds.csv, summary.json, the final int8 model, its C header and the plot. An interrupted run
    writes the same files for the rounds done (``"complete": false`` in summary.json)."""
    from fedtiny.model.export import export_header
    from fedtiny.model.flatbuffer import write_head
    from fedtiny.report.drift import comparison, drift_metrics
    from fedtiny.report.html import write_report
    from fedtiny.report.results import (
        accuracy_intervals,
        evaluation_info,
        plot_accuracy,
        write_rounds_csv,
        write_summary,
    )

    out, rows, s = plan.out_dir, plan.server.rows, plan.scenario
    final = write_head(plan.tflite, plan.server.head)
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
    summary: dict[str, Any] = {
        "scenario": s.name,
        "task": data_label(s),
        "devices": s.fleet.devices,
        "gateways": plan.layout.gateways,
        "rounds": s.rounds,
        "complete": plan.server.round
        >= s.rounds,  # false: interrupted (Ctrl-C/SIGTERM); --resume continues it
        "rounds_done": plan.server.round,
        "base_model": {
            "float_accuracy_clean": plan.base_meta["float_accuracy"],
            "int8_accuracy_clean": plan.base_meta["int8_accuracy"],
            "bytes": plan.base_meta["bytes"],
            **{
                k: plan.base_meta[k]
                for k in ("source", "head", "central_head_accuracy", "classes")
                if k in plan.base_meta
            },
        },
        "initial_accuracy": rows[0].accuracy,
        "final_accuracy": rows[-1].accuracy,
        "final_accuracy_global": rows[-1].accuracy_global,
        "best_accuracy": max(r.accuracy for r in rows),
        "group_accuracy_initial": rows[0].group_accuracy,
        "group_accuracy_final": rows[-1].group_accuracy,
        **accuracy_intervals(rows),
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
    summary["comparison"] = comparison(metrics, curves)
    summary["fleet_stats"] = fleet_stats(plan)
    summary["energy_j"] = round(sum(r.energy_j for r in rows), 6)
    summary["stragglers"] = sum(r.stragglers for r in rows)
    summary["devices_dropped"] = sum(r.devices_dropped for r in rows)
    summary["evaluation"] = evaluation_info(
        out / FLEET_DIR, s.fleet.test_samples_per_device, min(s.eval.baseline_devices, s.fleet.devices)
    )
    _concat_device_log(out)
    summary["wall_seconds"] = round(time.time() - plan.started, 1)
    if s.output.plots:
        summary["files"] += write_report(plan, summary, out)
    write_summary(summary, out / "summary.json")
    return summary


def _concat_device_log(out: Path) -> None:
    """device_rounds.npz: one row per (round, sampled device): status, virtual time, energy, bytes; per round the
    asleep devices (``asleep_round``, ``asleep_count``, ``awake_bits``); ``status_names`` names the codes."""
    import numpy as np

    from fedtiny.server.fleet_server import STATUS

    d = out / "device_rounds"
    files = sorted(d.glob("r*.npz")) if d.exists() else []
    if not files:
        return
    parts = [dict(np.load(f)) for f in files]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez_compressed(out / "device_rounds.npz", status_names=np.array(STATUS), **cat)  # type: ignore[arg-type]


def fleet_stats(plan: RunPlan) -> dict[str, Any]:
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
        # the Ray nodes whose gateways did work (each gateway process notes its node: clients/simulated/app.py)
        "ray_nodes": sorted(p.name for p in (fd / "ray_nodes").iterdir())
        if (fd / "ray_nodes").is_dir()
        else [],
    }


def run_scenario(
    s: Scenario,
    out_dir: Path,
    log: Log = print,
    progress: Any = None,
    resume: bool = False,
    ray_address: str = "",
    stop_after: int = 0,
    stop: Any = None,
) -> dict[str, Any]:
    """The main job: prepare, simulate, write results. Returns the summary.

    With ``stop`` (a :class:`fedtiny.interrupt.StopSignal`), a Ctrl-C or SIGTERM during the rounds writes the
    results of the rounds done (from the last checkpoint) and raises
    :class:`fedtiny.interrupt.RunInterrupted` carrying that summary.
    """
    from fedtiny.interrupt import RunInterrupted

    plan = prepare_run(s, out_dir, log, progress, resume=resume, stop_after=stop_after)
    if stop is not None:
        stop.plan = plan  # a forced stop writes what this plan holds
    if plan.server.round < s.rounds:
        try:
            simulate(plan, log, ray_address, stop)
        except RunInterrupted as exc:
            if stop is not None:
                stop.writing.set()
            try:
                if plan.writer is not None:  # started when the rounds stopped, while Flower and Ray shut down
                    thread, box = plan.writer
                    thread.join()
                    if "error" in box:
                        raise box["error"]
                    exc.summary = box.get("summary")
                else:
                    exc.summary = finish_interrupted(plan)
            finally:
                if stop is not None:
                    stop.writing.clear()
            raise
    return finish_run(plan)


def start_writing_interrupted(plan: RunPlan) -> None:
    """Write an interrupted run's results in a thread, so that it overlaps Flower's and Ray's shutdown
    (:func:`run_scenario` waits for it); called by the ServerApp as soon as the rounds stop."""
    import threading

    if plan.stop is not None:
        plan.stop.writing.set()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["summary"] = finish_interrupted(plan)
        except BaseException as exc:  # handed to the main thread by run_scenario
            box["error"] = exc

    thread = threading.Thread(target=work, name="fedtiny-write-results", daemon=True)
    plan.writer = (thread, box)
    thread.start()


def finish_interrupted(plan: RunPlan) -> dict[str, Any] | None:
    """The results of an interrupted run: the state of its last checkpoint (what ``--resume`` continues),
    else what the server holds; None before round 0 was evaluated."""
    plan.server.load_checkpoint()
    if not plan.server.rows:
        return None
    return finish_run(plan)
