"""Run a scenario end to end: model → fleet data → Flower rounds → results.

Library functions; the CLI (`fedtiny run`) is a thin layer over :func:`run_scenario`. The rounds run on
Flower's supported simulation runtime (``runtime.engine = "simulation"``, "ray" an alias: a private
simulation SuperLink driven by `flwr run`, :mod:`fedtiny.runtime.superlink`) or in this process
(``"inline"``: the same gateway code without Flower or Ray, for tests). A composition root: it wires the
gateway code of fedtiny/clients/ into the inline engine.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from fedtiny.config import Scenario
from fedtiny.finish import (
    concat_device_log,
    finish_interrupted,
    finish_run,
    fleet_stats,
    start_writing_interrupted,
)
from fedtiny.plan import Log, RunPlan, check_budget, data_label, prepare_run
from fedtiny.summary import Summary

if TYPE_CHECKING:
    from fedtiny.interrupt import StopSignal
    from fedtiny.results import RoundRow
    from fedtiny.runtime.channel import RoundRecord

#: `fedtiny run`'s progress: each round's row (inline) or the record the ServerApp streams, and the rounds
RunProgress = Callable[["RoundRow | RoundRecord", int], None]

# the names tests and benchmarks import from here
_concat_device_log = concat_device_log
__all__ = [
    "RunPlan",
    "check_budget",
    "data_label",
    "finish_interrupted",
    "finish_run",
    "fleet_stats",
    "prepare_run",
    "run_scenario",
    "simulate",
    "start_writing_interrupted",
]


class _RayWhere(TypedDict, total=False):
    """Where ray.init starts or joins Ray: a cluster's address, or a local Ray with this many CPUs."""

    address: str
    num_cpus: int


def simulate(plan: RunPlan, log: Log = print, ray_address: str = "", stop: StopSignal | None = None) -> None:
    """Run a ready plan's rounds in this process: inline, or on Flower's in-process Simulation Engine (Ray),
    one Flower node per gateway.

    The Ray path is an adapter over Flower's deprecated ``run_simulation``, kept for one caller:
    ``benchmarks/fleet_throughput.py`` measures rounds of a synthetic plan that a scenario cannot describe
    (so the ServerApp of :mod:`fedtiny.runtime.superlink` cannot prepare it). `fedtiny run` never takes it;
    Flower's deprecation notice is filtered here.

    ``stop`` (a :class:`fedtiny.interrupt.StopSignal`): a Ctrl-C or SIGTERM ends the rounds at the next exchange
    with the gateways and raises :class:`fedtiny.interrupt.RunInterrupted` once Flower and Ray are down.
    """
    plan.stop = stop
    if plan.scenario.runtime.engine == "inline":
        from fedtiny.clients.simulated.gateway import handle
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

    from fedtiny.clients.simulated.app import app as client_app
    from fedtiny.runtime import flower_poll
    from fedtiny.runtime.ray_env import SETUP_HOOK
    from fedtiny.runtime.serverapp import make_server_app

    rt = plan.scenario.runtime
    address = ray_address or rt.ray_address or os.environ.get("RAY_ADDRESS", "")
    started_ray = not ray.is_initialized()
    if started_ray:  # Flower only calls ray.init when Ray is not up yet: we set the worker environment
        from fedtiny import lifeline

        lifeline.guard()  # Ray's daemons and workers die with this process, however it ends
        pythonpath = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
        runtime_env = {
            "worker_process_setup_hook": SETUP_HOOK,
            "env_vars": {"PYTHONPATH": pythonpath, "FLWR_TELEMETRY_ENABLED": "0"},
        }
        kwargs: _RayWhere = {"address": address} if address else {"num_cpus": os.cpu_count() or 2}
    try:
        if started_ray:
            ray.init(runtime_env=runtime_env, include_dashboard=False, logging_level=logging.ERROR, **kwargs)
        if stop is not None:
            stop.install()  # ray.init replaced the SIGTERM handler
            stop.raise_now = (
                False  # the server thread stops at its next exchange (fedtiny.interrupt.StoppableGrid)
            )
            stop.check()  # a signal during ray.init
        flower_poll.install()  # the engine looks for new messages every 5 ms, not 0.1 s
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


def run_scenario(
    s: Scenario,
    out_dir: Path,
    log: Log = print,
    progress: RunProgress | None = None,
    resume: bool = False,
    ray_address: str = "",
    stop_after: int = 0,
    stop: StopSignal | None = None,
    verbose: bool = False,
) -> Summary:
    """The main job: prepare, run the rounds, write results. Returns the summary.

    The driver prepares everything first (model, fleet data: the slow first-time work and its errors happen
    here); on the simulation engine the ServerApp reuses it and writes the results itself.
    With ``stop`` (a :class:`fedtiny.interrupt.StopSignal`), a Ctrl-C or SIGTERM during the rounds writes the
    results of the rounds done (from the last checkpoint) and raises
    :class:`fedtiny.interrupt.RunInterrupted` carrying that summary. ``verbose``: Flower's, Ray's and
    TensorFlow's output goes to the terminal instead of ``out_dir/fedtiny.log``.
    """
    from fedtiny.interrupt import RunInterrupted

    inline = s.runtime.engine == "inline"
    plan = prepare_run(s, out_dir, log, progress if inline else None, resume=resume, stop_after=stop_after)
    if stop is not None:
        stop.plan = plan  # a forced stop writes what this plan holds
    if plan.server.round < s.rounds:
        try:
            if inline:
                simulate(plan, log, ray_address, stop)
            else:
                return _on_superlink(plan, progress, resume, ray_address, stop, verbose)
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


def _on_superlink(
    plan: RunPlan,
    progress: RunProgress | None,
    resume: bool,
    ray_address: str,
    stop: StopSignal | None,
    verbose: bool,
) -> Summary:
    """The rounds on a private simulation SuperLink (`flwr run`); the ServerApp writes the results."""
    import json

    from fedtiny.runtime.superlink import SimulationRuntime

    s = plan.scenario
    rt = s.runtime
    runtime = SimulationRuntime(
        plan.out_dir,
        plan.layout.gateways,
        rt.cpus_per_gateway,
        ray_address or rt.ray_address or os.environ.get("RAY_ADDRESS", ""),
        verbose=verbose,
        stop=stop,
    )
    plan.stop = stop
    if stop is not None:
        stop.raise_now = False  # the runtime checks stop.event and stops its processes in order

    def show(rec: RoundRecord) -> None:
        if progress is not None:
            progress(rec, s.rounds)

    try:
        runtime.run(
            plan.out_dir / "scenario.resolved.toml",
            resume,
            s.seed,
            show,
            on_stop=lambda: start_writing_interrupted(plan),  # overlaps the processes' shutdown
        )
    finally:
        if stop is not None:
            stop.raise_now = True

    # the ServerApp counted the wall time from the driver's start (the prepared plan carries it): the console,
    # summary.json and report.html say the same number
    summary: Summary = json.loads((plan.out_dir / "summary.json").read_text())
    return summary
