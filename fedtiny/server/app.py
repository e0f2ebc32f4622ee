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
        from fedtiny.server.fleet_server import FlowerTransport

        try:
            plan.server.run(FlowerTransport(grid))
        except BaseException as exc:  # Flower logs and swallows ServerApp errors: keep it for the CLI
            plan.error = exc
            raise

    return server_app


app = ServerApp()


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    from fedtiny.config import load_scenario

    cfg = context.run_config
    scenario = load_scenario(str(cfg["scenario"]))
    from fedtiny.server.fleet_server import FlowerTransport

    plan = prepare_run(scenario, Path(str(cfg.get("out-dir", "runs/flwr"))), resume=bool(cfg.get("resume", False)))
    plan.server.run(FlowerTransport(grid))
    finish_run(plan)
