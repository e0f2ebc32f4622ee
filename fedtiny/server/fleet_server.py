"""The federated round loop of a simulation: global int8 head down, device heads up, aggregate, re-quantize,
redeploy, evaluate, checkpoint. It composes, along Flower's lines:

- the fleet model (fedtiny/server/fleet_model.py): who is awake, sampled, dropped, late; virtual time,
  energy, battery;
- the strategy and aggregation step (fedtiny/server/updates.py around fedtiny/server/strategy.py: Flower's
  strategy with devices as its clients), the same step a field trial runs;
- the evaluator (fedtiny/server/evaluator.py): accuracies with intervals, baselines, personalization,
  forgetting curves;
- the typed run state (fedtiny/server/run_state.py) that checkpoints (fedtiny/server/checkpoint.py) write.

The transport is Flower's Grid (one Flower node per gateway) or, for tests, an in-process call of the same
gateway code (fedtiny/server/transports.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedtiny.fleet.data import FleetLayout
from fedtiny.fleet.labels import COUNT_NAMES
from fedtiny.fleet.recorded import open_fleet_data
from fedtiny.ondevice import Int8Head
from fedtiny.records import GatewayInstruction
from fedtiny.results import RoundRow
from fedtiny.server.checkpoint import load_checkpoint, save_checkpoint
from fedtiny.server.evaluator import Evaluator
from fedtiny.server.fleet_model import STATUS, FleetModel
from fedtiny.server.partial import label_tally, labels_per_device
from fedtiny.server.run_state import Curves, RunState
from fedtiny.server.spec import RoundSpec
from fedtiny.server.strategy import DeviceStrategy
from fedtiny.server.transports import GatewayTransport
from fedtiny.server.updates import aggregate_step

ProgressFn = Callable[[RoundRow, int], None]
CHECKPOINT = "checkpoint"
__all__ = ["CHECKPOINT", "STATUS", "FleetServer", "ProgressFn"]


@dataclass
class FleetServer:
    spec: RoundSpec
    layout: FleetLayout
    fleet_dir: Path
    initial_head: Int8Head
    progress: ProgressFn | None = None
    out_dir: Path | None = None
    rows: list[RoundRow] = field(default_factory=list)
    head: Int8Head | None = None
    rejected_total: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    stop_after: int = 0  # tests: raise after checkpointing this round (simulates a killed run)

    def __post_init__(self) -> None:
        s = self.spec
        self.head = self.initial_head
        self.round = 0
        data = open_fleet_data(self.fleet_dir)
        self.per_tensor = bool(data.meta.get("per_tensor", False))
        self.calib = np.load(self.fleet_dir / "calib_feats.npy")
        self.train_cfg = s.train
        self.fleet = FleetModel.from_fleet_dir(s, self.layout, data, self.fleet_dir)
        self.strategy = DeviceStrategy.from_spec(s.strategy_spec)  # Flower's strategy, devices as its clients
        self.evaluator = Evaluator(s, self.layout, data, self.fleet_dir, self.initial_head, self.train_cfg)

    @property
    def curves(self) -> Curves:
        """Per method and group, one value per round (the evaluator's)."""
        return self.evaluator.state.curves

    def _cfg(self, r: int, seg: int) -> GatewayInstruction:
        """The train instruction (what every gateway needs besides the head and its devices)."""
        s = self.spec
        return GatewayInstruction(
            round=r,
            segment=seg,
            seed=s.seed,
            fleet_dir=str(self.fleet_dir),
            train=self.train_cfg,
            uplink=s.strategy.uplink,
            # partial sums from the gateways when they give the strategy what per-device updates would
            reduce=self.strategy.reducible and s.strategy.personalize <= 0,
            max_norm=s.strategy.max_update_norm,
            clip_norm=self.strategy.clip_norm,
        )

    # -- rounds ----------------------------------------------------------------------------------
    def run(self, transport: GatewayTransport) -> None:
        """Round 0 (the initial head evaluated) unless resumed, then every round up to ``spec.rounds``."""
        transport.connect(self.layout.gateways)
        if self.round == 0 and not self.rows:
            t0 = time.time()
            self._finish(0, RoundRow(0, 0, np.nan, np.nan, np.nan, 0, 0, 0, 0, 0, 0.0), t0)
            self._checkpoint()
        for r in range(self.round + 1, self.spec.rounds + 1):
            self._round(transport, r)
            self._checkpoint()
            if self.stop_after and r >= self.stop_after:
                raise KeyboardInterrupt(f"stopped after round {r} (stop_after)")

    def _round(self, transport: GatewayTransport, r: int) -> None:
        t0 = time.time()
        s = self.spec
        assert self.head is not None
        seg = self.layout.segment_of_round(r)
        plan = self.fleet.plan(r, self.head)
        trainers = plan.trainers
        parts, failed = (
            transport.exchange("train", self.head, self._cfg(r, seg), self.fleet.per_gateway(trainers))
            if len(trainers)
            else ([], 0)
        )
        step = aggregate_step(
            r, self.head, parts, self.strategy, s.strategy.max_update_norm, self.calib, self.per_tensor
        )
        self.head = step.head
        acc = step.accepted
        if acc is not None and s.strategy.personalize > 0:
            self.evaluator.personal_updates(acc.device_ids, acc.weights, acc.bias)
        self.rejected_total += step.rejected
        for key, cnt in step.reasons.items():
            self.rejected_reasons[key] = self.rejected_reasons.get(key, 0) + cnt
        redeploy, redeploy_j = self.fleet.spend(plan, self.head)
        if self.out_dir is not None:
            self.fleet.log_devices(self.out_dir, plan, step.accepted_ids, labels_per_device(parts))
        if s.eval.baselines:
            self.evaluator.local_only_step(r, plan.avail, self.head)
        deadline = s.strategy.deadline_s
        row = RoundRow(
            r,
            seg,
            np.nan,
            np.nan,
            step.loss,
            step.trained,
            step.rejected,
            failed,
            plan.down * len(plan.sampled) + redeploy * self.layout.devices,
            plan.up * len(trainers),
            0.0,
            devices_available=int(plan.avail.sum()),
            devices_sampled=len(plan.sampled),
            stragglers=int((~plan.on_time & ~plan.drop).sum()),
            devices_dropped=int(plan.drop.sum()),
            virtual_s=min(plan.waited, deadline) if deadline > 0 else plan.waited,
            energy_j=float(plan.joules.sum() + redeploy_j.sum()),
            energy_mj_per_trainer=float(1e3 * plan.joules.mean()) if len(plan.joules) else 0.0,
        )
        tally = label_tally(parts)
        if tally is not None:
            row.labels = dict(zip(COUNT_NAMES, (int(v) for v in tally), strict=True))
        self._finish(r, row, t0)

    def _finish(self, r: int, row: RoundRow, t0: float) -> None:
        """Evaluate the deployed head into ``row``, append it, report progress."""
        assert self.head is not None
        self.evaluator.evaluate(r, row, self.head, len(self.rows))
        row.wall_s = round(row.wall_s + time.time() - t0, 3)
        self.rows.append(row)
        self.round = r
        if self.progress:
            self.progress(row, self.spec.rounds)

    # -- checkpoints -----------------------------------------------------------------------------
    def run_state(self) -> RunState:
        """The state after the last finished round (shares the arrays: write it before the next round)."""
        assert self.head is not None
        return RunState(
            self.round,
            self.head,
            self.fleet.state,
            self.evaluator.state,
            self.rows,
            self.rejected_total,
            self.rejected_reasons,
            self.strategy.state(),
        )

    def restore(self, st: RunState) -> None:
        """Continue from ``st`` (a checkpoint of this scenario)."""
        self.round, self.head, self.rows = st.round, st.head, st.rows
        self.fleet.state, self.evaluator.state = st.fleet, st.evaluation
        self.rejected_total, self.rejected_reasons = st.rejected_total, st.rejected_reasons
        self.strategy.load_state(st.strategy)

    def _checkpoint(self) -> None:
        if self.out_dir is not None and self.spec.checkpoint:
            save_checkpoint(self.run_state(), self.out_dir / CHECKPOINT)

    def load_checkpoint(self) -> bool:
        """Continue from the last complete checkpoint under out_dir; False if there is none."""
        st = None if self.out_dir is None else load_checkpoint(self.out_dir / CHECKPOINT)
        if st is not None:
            self.restore(st)
        return st is not None
