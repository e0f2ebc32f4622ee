"""fedtiny's Flower ServerApp (``app``), run by Flower's simulation runtime for `fedtiny run` and `flwr run .`.

It receives the plan `fedtiny run` resolved and prepared in the run directory (``prepared=true``:
:func:`fedtiny.plan.prepare.load_prepared_run`; under a plain `flwr run .` it prepares the scenario of the run
config itself), runs the rounds, writes the results, and appends one
record per round to the run directory's channel (:mod:`fedtiny.runtime.channel`) that `fedtiny run` follows
for its progress bar. An error becomes one line in the channel's error record; its traceback goes to the log.

:func:`make_server_app` is the in-process adapter over a ready plan (see :func:`fedtiny.runner.simulate`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedtiny.config import Scenario
from fedtiny.finish import finish_run, start_writing_interrupted
from fedtiny.interrupt import RunInterrupted, StopFile, StoppableGrid
from fedtiny.plan import RunPlan, load_scenario, prepare_run
from fedtiny.plan.prepare import load_prepared_run
from fedtiny.runtime.channel import LOG as LOG_FILE
from fedtiny.runtime.channel import Writer, stop_path

LOG = logging.getLogger("flwr")


def make_server_app(plan: RunPlan) -> ServerApp:
    """A ServerApp that runs ``plan``'s rounds in this process; exceptions are kept on the plan for the caller."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        from fedtiny.server.transports import FlowerTransport

        # Ctrl-C/SIGTERM (plan.stop) end the rounds at the next exchange; replies are seen within milliseconds
        try:
            plan.server.run(FlowerTransport(StoppableGrid(grid, plan.stop)))
        except Exception as exc:
            plan.error = exc
            if isinstance(exc, RunInterrupted):  # a clean end for Flower: it stops the engine at once
                start_writing_interrupted(plan)  # the rounds done are written while Flower and Ray stop
                return
            raise
        except BaseException as exc:  # Flower logs and swallows ServerApp errors: keep it for the caller
            plan.error = exc
            raise

    return server_app


app = ServerApp()


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    from fedtiny.server.transports import FlowerTransport

    cfg = context.run_config
    out_dir = Path(str(cfg.get("out-dir") or "runs/flwr")).resolve()
    channel = Writer(out_dir)
    _log_to(out_dir / LOG_FILE)
    try:
        if bool(cfg.get("prepared", False)):  # `fedtiny run` resolved and prepared the plan: receive it
            plan = load_prepared_run(out_dir, log=LOG.info, progress=channel.round_done)
        else:  # a plain `flwr run .`: this process is the only one
            plan = prepare_run(
                _scenario(cfg, grid),
                out_dir,
                log=LOG.info,
                progress=channel.round_done,
                resume=bool(cfg.get("resume", False)),
            )
        if plan.server.round < plan.scenario.rounds:
            plan.server.run(FlowerTransport(StoppableGrid(grid, StopFile(stop_path(out_dir)))))
        channel.done(int(finish_run(plan).get("rounds_done") or 0))
    except RunInterrupted:  # the driver asked to stop (Ctrl-C): it writes the results of the rounds done
        channel.stopped()
    except BaseException as exc:
        channel.error(exc)
        LOG.error("fedtiny ServerApp failed", exc_info=exc)
        raise


def _log_to(path: Path) -> None:
    """Flower's log of this process (the ServerApp's lines and tracebacks included) also goes to the run's
    log file: under the simulation runtime it would otherwise only reach `flwr log`."""
    if any(getattr(h, "baseFilename", None) == str(path) for h in LOG.handlers):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(handler)


def _scenario(cfg: Mapping[str, object], grid: Grid) -> Scenario:
    """The run config's scenario (``seed`` >= 0 overrides its seed). Under a plain `flwr run .` the federation
    decides how many SuperNodes (gateways) exist: the scenario's devices are spread over all of them."""
    path = str(cfg.get("scenario") or "")
    if not path:
        from fedtiny.errors import ScenarioError

        raise ScenarioError(
            "run config: 'scenario' is empty; pass --run-config 'scenario=\"/abs/path.toml\"'"
        )
    seed = int(str(cfg.get("seed", -1)))
    sets = [f"seed={seed}"] if seed >= 0 else []
    nodes = _settled_node_count(grid)
    devices = load_scenario(path, sets).fleet.devices
    return load_scenario(path, [*sets, f"fleet.devices_per_gateway={-(-devices // max(nodes, 1))}"])


def _settled_node_count(grid: Grid, quiet_s: float = 3.0, limit_s: float = 120.0) -> int:
    """Number of connected SuperNodes once it has not changed for ``quiet_s`` seconds."""
    import time

    start = last_change = time.time()
    count = len(list(grid.get_node_ids()))
    while time.time() - last_change < quiet_s and time.time() - start < limit_s:
        time.sleep(0.5)
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, last_change = now, time.time()
    return count
