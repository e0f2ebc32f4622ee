"""Everything before the first round: base model, fleet data, resolved scenario, the round loop's server.

``fedtiny run`` prepares in the driver (training the model, computing the feature pools and any error happen
in the user's process) and saves the resolved plan in the run directory; Flower's ServerApp process loads it
(:func:`load_prepared_run`) instead of resolving the scenario again. Under a plain `flwr run .` the ServerApp
is the only process and prepares itself.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict, cast

from fedtiny.config import Scenario, scenario_to_toml
from fedtiny.errors import ModelError
from fedtiny.fleet.boards import check_fits, get_board
from fedtiny.fleet.data import FLEET_DIR, FleetLayout, prepare_fleet, write_labels
from fedtiny.ondevice import device_budget
from fedtiny.plan.resolve import StageInputs, resolve, train_config
from fedtiny.summary import DeviceBudget, Summary

if TYPE_CHECKING:
    from fedtiny.interrupt import StopSignal
    from fedtiny.server.fleet_server import FleetServer, ProgressFn

Log = Callable[[str], object]


class BaseMeta(TypedDict):
    """The base model's meta (``base_meta.json``; :func:`fedtiny.finish.finish_run` reads it). A reference
    model's meta (fedtiny.model.build) carries more keys (spec, build time, ...), written as they are."""

    float_accuracy: float | None
    int8_accuracy: float
    bytes: int
    source: NotRequired[str]
    head: NotRequired[str]
    classes: NotRequired[list[str]]
    devices: NotRequired[list[str]]
    central_head_accuracy: NotRequired[float]
    budget: NotRequired[DeviceBudget]


class WriterBox(TypedDict, total=False):
    """What the thread writing an interrupted run's results hands back: its summary, or its error."""

    summary: Summary | None
    error: BaseException


@dataclass
class RunPlan:
    scenario: Scenario
    stages: StageInputs  # the scenario resolved once: each stage's typed input
    out_dir: Path
    tflite: bytes
    layout: FleetLayout
    base_meta: BaseMeta
    server: FleetServer
    started: float = field(default_factory=time.time)
    error: BaseException | None = None
    stop: StopSignal | None = None  # Ctrl-C/SIGTERM stop the rounds at the next exchange
    # (thread, result box) writing an interrupted run's results (fedtiny.finish.start_writing_interrupted)
    writer: tuple[threading.Thread, WriterBox] | None = None


def check_budget(s: Scenario, num_classes: int, dim: int) -> DeviceBudget:
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


def _base_model(s: Scenario, stages: StageInputs, log: Log) -> tuple[bytes, BaseMeta]:
    """The int8 model to deploy for generated data: the user's (.tflite or Keras, scored on the task's clean
    factory test set) or the task's reference model."""
    from fedtiny.model.build import build_base_model, factory_data

    spec = stages.model
    if not (s.model.tflite or s.model.keras):
        base = build_base_model(spec, log)
        return base.tflite, cast(BaseMeta, dict(base.meta))  # fedtiny.model.build: a plain dict
    from fedtiny.model.runtime import Int8Runner
    from fedtiny.model.user import convert_keras, load_tflite

    if s.model.tflite:
        um = load_tflite(s.model.tflite)
    else:
        rep, _ = factory_data(spec, spec.representative_samples, 0)
        um = convert_keras(s.model.keras, rep, log)
    import numpy as np

    task = stages.fleet.task
    want, got = tuple(um.io.input_shape[1:]), tuple(task.input_shape)
    if int(np.prod(want)) != int(np.prod(got)) or um.num_classes != task.num_classes:
        raise ModelError(
            f"{um.source}: the model takes {list(want)} and has {um.num_classes} outputs; task '{s.task.name}' "
            f"gives {list(got)} inputs of {task.num_classes} classes (for your own data use [data] path)"
        )
    xt, yt = factory_data(spec, spec.test_samples, 1)
    int8_acc = float((Int8Runner(um.tflite, "tflm").predict(xt) == yt).mean())
    float_acc = float((um.float_predict(xt) == yt).mean()) if um.float_predict is not None else None
    meta: BaseMeta = {"float_accuracy": float_acc, "int8_accuracy": int8_acc, "bytes": len(um.tflite),
            "source": str(um.source), "head": um.io.head_path}  # fmt: skip
    return um.tflite, meta


def _saved_base_model(
    s: Scenario, stages: StageInputs, out_dir: Path, log: Log, reuse: bool
) -> tuple[bytes, BaseMeta]:
    """The base model of generated data, saved in ``out_dir`` (``base_int8.tflite``, ``base_meta.json``) and
    reused from there by a resumed run and by the ServerApp (no TensorFlow there, even for a Keras model)."""
    saved, meta_file = out_dir / "base_int8.tflite", out_dir / "base_meta.json"
    if reuse and saved.exists() and meta_file.exists():
        return saved.read_bytes(), cast(BaseMeta, dict(json.loads(meta_file.read_text())))
    tflite, meta = _base_model(s, stages, log)
    saved.write_bytes(tflite)
    meta_file.write_text(json.dumps(meta, indent=1))
    return tflite, meta


def _prepare_user_data(
    s: Scenario, stages: StageInputs, out_dir: Path, log: Log, resume: bool
) -> tuple[Scenario, bytes, FleetLayout, BaseMeta]:
    """A user's recordings: load them, take (or convert) the model, build the fleet of the data's devices."""
    from fedtiny.fleet.user_data import load_user_model_and_data, prepare_user_fleet

    saved = out_dir / "base_int8.tflite"
    if resume and saved.exists() and (out_dir / FLEET_DIR / "layout.json").exists():
        return (
            s,
            saved.read_bytes(),
            stages.fleet.layout,
            json.loads((out_dir / "base_meta.json").read_text()),
        )
    rec, um = load_user_model_and_data(stages.fleet, s.model, log)
    uf = prepare_user_fleet(stages.fleet, s.train, rec, um.tflite, out_dir, log, um.float_predict)
    meta: BaseMeta = {
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
    # the data said how many devices there are: the plan's scenario says so too
    s = dataclasses.replace(s, fleet=uf.spec.fleet, eval=uf.spec.eval)
    return s, um.tflite, uf.layout, meta


def prepare_run(
    s: Scenario,
    out_dir: Path,
    log: Log = print,
    progress: ProgressFn | None = None,
    resume: bool = False,
    stop_after: int = 0,
) -> RunPlan:
    """Everything before the first round, in the driver: base model, fleet features, resolved scenario.

    With ``resume``, the fleet data and the last checkpoint under ``out_dir`` are reused.
    """
    from fedtiny.model.flatbuffer import read_head

    started = time.time()  # the user's wall time counts from here, preparation included
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in (out_dir / "checkpoint").glob("*") if (out_dir / "checkpoint").exists() else []:
            old.unlink()
        for old in (out_dir / "device_rounds").glob("*.npz") if (out_dir / "device_rounds").exists() else []:
            old.unlink()
    stages = resolve(s)
    if s.data.path:
        s, tflite, layout, base_meta = _prepare_user_data(s, stages, out_dir, log, resume)
        stages = resolve(s)  # with the devices the data holds
    else:
        tflite, base_meta = _saved_base_model(s, stages, out_dir, log, resume)
        if (
            resume
            and (out_dir / FLEET_DIR / "layout.json").exists()
            and (out_dir / FLEET_DIR / "speed.npy").exists()
        ):
            layout = stages.fleet.layout
        else:
            from fedtiny.model.flatbuffer import model_io, read_tail

            layout = prepare_fleet(
                stages.fleet,
                tflite,
                out_dir,
                log=log,
                tail=read_tail(tflite),
                per_tensor=model_io(tflite).per_tensor,
            )
    write_labels(
        out_dir / FLEET_DIR, s.labels, s.drift, layout.groups
    )  # what the gateways read: the labels devices get
    if not resume:
        (out_dir / "scenario.resolved.toml").write_text(scenario_to_toml(s))
    head = read_head(tflite)
    if s.labels.noise_matrix and len(s.labels.noise_matrix) != head.num_classes:
        from fedtiny.errors import ScenarioError

        raise ScenarioError(
            f"'labels.noise_matrix' is {len(s.labels.noise_matrix)} x {len(s.labels.noise_matrix)}; "
            f"the model has {head.num_classes} classes"
        )
    meta: BaseMeta = {**base_meta, "budget": check_budget(s, head.num_classes, head.num_features)}
    resolved = ResolvedRun(s, stages, layout, meta, started)
    _save_resolved(out_dir, resolved)
    return _run_plan(resolved, out_dir, tflite, log, progress, resume, stop_after)


@dataclass(frozen=True)
class ResolvedRun:
    """What preparing a run decided: the scenario as resolved (recorded data's devices counted), each stage's
    input, the fleet layout, the base model's meta. Saved in the run directory (``RESOLVED``) so that Flower's
    ServerApp process receives the plan instead of resolving the scenario again."""

    scenario: Scenario
    stages: StageInputs
    layout: FleetLayout
    base_meta: BaseMeta
    started: float  # when the driver started preparing: the run's wall time counts from here


#: the resolved plan of a prepared run directory (a pickle: written and read by the same installed fedtiny)
RESOLVED = "plan.pickle"


def _save_resolved(out_dir: Path, resolved: ResolvedRun) -> None:
    tmp = out_dir / f"{RESOLVED}.tmp"
    tmp.write_bytes(pickle.dumps(resolved))
    tmp.replace(out_dir / RESOLVED)


def load_prepared_run(
    out_dir: Path, log: Log = print, progress: ProgressFn | None = None, resume: bool = True
) -> RunPlan:
    """The plan `fedtiny run` prepared in ``out_dir`` (``RESOLVED``, the base model, the fleet directory):
    nothing is resolved or computed again; with ``resume`` the last checkpoint is loaded."""
    try:
        resolved = pickle.loads((out_dir / RESOLVED).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelError(f"{out_dir / RESOLVED}: no prepared plan to run ({exc})") from None
    if not isinstance(resolved, ResolvedRun):
        raise ModelError(f"{out_dir / RESOLVED}: not a prepared fedtiny plan")
    tflite = (out_dir / "base_int8.tflite").read_bytes()
    return _run_plan(resolved, out_dir, tflite, log, progress, resume, 0)


def _run_plan(
    r: ResolvedRun,
    out_dir: Path,
    tflite: bytes,
    log: Log,
    progress: ProgressFn | None,
    resume: bool,
    stop_after: int,
) -> RunPlan:
    """The round loop's server over a resolved plan (continuing from the last checkpoint with ``resume``)."""
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.server.fleet_server import FleetServer

    server = FleetServer(
        r.stages.rounds,
        r.layout,
        out_dir / FLEET_DIR,
        read_head(tflite),
        progress=progress,
        out_dir=out_dir,
        stop_after=stop_after,
    )
    if resume:
        if server.load_checkpoint():
            log(f"resume: continuing after round {server.round} of {r.scenario.rounds}")
        else:
            log("resume: no checkpoint found, starting from round 1")
    return RunPlan(r.scenario, r.stages, out_dir, tflite, r.layout, r.base_meta, server, started=r.started)
