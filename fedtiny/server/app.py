"""fedtiny's Flower ServerApp.

``fedtiny run`` builds the plan (model, fleet data) in the driver and hands a ready ServerApp to Flower's
Simulation Engine. ``flwr run .`` uses the module-level ``app``, which reads the scenario path from the run
config and prepares the same plan itself.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedtiny.runner import RunPlan, finish_run, prepare_run


def make_server_app(plan: RunPlan) -> ServerApp:
    """A ServerApp that runs ``plan``'s rounds; exceptions are kept on the plan for the caller."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        from fedtiny.server.transports import FlowerTransport

        if plan.stop is not None:  # Ctrl-C/SIGTERM end the rounds at the next exchange
            from fedtiny.interrupt import StoppableGrid

            grid = StoppableGrid(grid, plan.stop)  # type: ignore[assignment]
        try:
            plan.server.run(FlowerTransport(grid))
        except Exception as exc:
            from fedtiny.interrupt import RunInterrupted

            plan.error = exc
            if isinstance(
                exc, RunInterrupted
            ):  # a clean end for Flower: it stops the Simulation Engine at once
                from fedtiny.runner import start_writing_interrupted

                start_writing_interrupted(
                    plan
                )  # the results of the rounds done, while Flower and Ray shut down
                return
            raise
        except BaseException as exc:  # Flower logs and swallows ServerApp errors: keep it for the CLI
            plan.error = exc
            raise

    return server_app


app = ServerApp()


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    from fedtiny.config import load_scenario

    cfg = context.run_config
    nodes = _settled_node_count(grid)
    # The federation, not the scenario, decides how many SuperNodes (gateways) exist under `flwr run`:
    # spread the scenario's devices over all of them.
    probe = load_scenario(str(cfg["scenario"]))
    per_gateway = -(-probe.fleet.devices // max(nodes, 1))
    scenario = load_scenario(str(cfg["scenario"]), [f"fleet.devices_per_gateway={per_gateway}"])
    from fedtiny.server.transports import FlowerTransport

    plan = prepare_run(
        scenario, Path(str(cfg.get("out-dir", "runs/flwr"))), resume=bool(cfg.get("resume", False))
    )
    plan.server.run(FlowerTransport(grid))
    finish_run(plan)


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
