"""The federated round loop over gateways: global int8 head down, device heads up, aggregate, re-quantize,
redeploy, evaluate. Runs inside a Flower ServerApp with the Grid of the current Message API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedtiny.config.schema import Scenario
from fedtiny.fleet.data import FleetLayout
from fedtiny.ondevice import FloatHead, Int8Head, dequantize_head, predict_int8, quantize_head
from fedtiny.records import float_update_bytes, head_patch_bytes, head_to_record, record_to_arrays
from fedtiny.report.results import RoundRow
from fedtiny.server.aggregate import Aggregator, validate_updates

ProgressFn = Callable[[RoundRow, int], None]


@dataclass
class FleetServer:
    scenario: Scenario
    layout: FleetLayout
    fleet_dir: Path
    initial_head: Int8Head
    progress: ProgressFn | None = None
    rows: list[RoundRow] = field(default_factory=list)
    head: Int8Head | None = None
    rejected_total: int = 0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        self.head = self.initial_head
        self._calib = np.load(self.fleet_dir / "calib_feats.npy")
        self._gtest = np.load(self.fleet_dir / "global_test_feats.npy")
        self._gtest_y = np.load(self.fleet_dir / "global_test_labels.npy")
        self._group = np.load(self.fleet_dir / "group.npy")
        self._agg = Aggregator(self.scenario.strategy)

    # -- messaging -------------------------------------------------------------------------------
    def _config(self, r: int, segment: int, devices: np.ndarray) -> ConfigRecord:
        s = self.scenario
        return ConfigRecord({
            "round": r, "segment": segment, "seed": s.seed, "devices": [int(d) for d in devices],
            "fleet-dir": str(self.fleet_dir), "cache-size": s.fleet.cache_size,
            "epochs": s.train.epochs, "batch-size": s.train.batch_size, "lr": s.train.lr,
            "momentum": s.train.momentum, "weight-decay": s.train.weight_decay,
            "prox-mu": s.train.prox_mu if s.strategy.name == "fedprox" or s.train.prox_mu else 0.0,
        })

    def _exchange(self, grid: Grid, kind: str, r: int, segment: int, devices: np.ndarray, key: str) -> tuple[dict[str, np.ndarray], int]:
        """Send one message per gateway holding some of ``devices``; merge per-device replies by device id."""
        assert self.head is not None
        msgs = []
        by_gw = devices // self.layout.devices_per_gateway
        for g in np.unique(by_gw):
            content = RecordDict({"head": head_to_record(self.head), "config": self._config(r, segment, devices[by_gw == g])})
            msgs.append(Message(content, dst_node_id=self.node_of[int(g)], message_type=kind))
        replies = list(grid.send_and_receive(msgs, timeout=self.timeout_s))
        parts = [record_to_arrays(m.content.array_records[key]) for m in replies if not m.has_error()]
        failed = len(msgs) - len(parts)  # error replies and gateways that did not answer in time
        if not parts:
            return {}, failed
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.argsort(merged["device_ids"], kind="stable")
        return {k: v[order] for k, v in merged.items()}, failed

    # -- rounds ----------------------------------------------------------------------------------
    def run(self, grid: Grid) -> None:
        t0 = time.time()
        nodes = self._wait_for_gateways(grid)
        replies = list(grid.send_and_receive(
            [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes], timeout=self.timeout_s
        ))
        self.node_of = {int(m.content.config_records["gateway"]["gateway"]): m.metadata.src_node_id for m in replies if not m.has_error()}
        missing = set(range(self.layout.gateways)) - set(self.node_of)
        if missing:
            errors = sorted({m.error.reason.strip().splitlines()[-1] for m in replies if m.has_error()})
            raise RuntimeError(f"gateways {sorted(missing)} did not answer the initial query: {'; '.join(errors) or 'timeout'}")
        self._evaluate(grid, 0, time.time() - t0, np.nan, 0, 0, 0, 0)
        for r in range(1, self.scenario.rounds + 1):
            self._round(grid, r)

    def _wait_for_gateways(self, grid: Grid) -> list[int]:
        """Gateways connect asynchronously: wait until all of them are registered."""
        deadline = time.time() + self.timeout_s
        while True:
            nodes = list(grid.get_node_ids())
            if len(nodes) >= self.layout.gateways or time.time() > deadline:
                return nodes
            time.sleep(0.2)

    def _sample(self, r: int) -> np.ndarray:
        k = self.layout.devices
        m = max(1, int(round(self.scenario.strategy.fraction * k)))
        rng = np.random.default_rng([self.scenario.seed, 0x5A3, r])
        return np.sort(rng.choice(k, size=m, replace=False)) if m < k else np.arange(k)

    def _round(self, grid: Grid, r: int) -> None:
        t0 = time.time()
        assert self.head is not None
        seg = self.layout.segment_of_round(r)
        sampled = self._sample(r)
        up, failed = self._exchange(grid, "train", r, seg, sampled, "updates")
        g = dequantize_head(self.head)
        rejected, loss, trained = 0, float("nan"), 0
        if up:
            val = validate_updates(up["weights"], up["bias"], g.weights, g.bias, self.scenario.strategy.max_update_norm)
            rejected = val.rejected
            ok = val.accepted
            trained = int(ok.sum())
            if trained:
                w, b = self._agg(g.weights, g.bias, up["weights"][ok], up["bias"][ok], up["num_examples"][ok])
                self.head = quantize_head(FloatHead(w, b), self.head.input_scale, self.head.input_zero_point, self._calib)
                loss = float(np.mean(up["loss"][ok]))
        self.rejected_total += rejected
        c, d = self.head.weights.shape
        n_down = len(sampled) + self.layout.devices  # head to trainers, redeployed to the whole fleet
        self._evaluate(grid, r, time.time() - t0, loss, trained, rejected, failed,
                       (head_patch_bytes(self.head) * n_down, float_update_bytes(c, d) * len(up.get("device_ids", []))))

    def _evaluate(self, grid: Grid, r: int, wall: float, loss: float, trained: int, rejected: int, failed: int,
                  traffic: tuple[int, int] | int) -> None:
        t0 = time.time()
        assert self.head is not None
        seg = self.layout.segment_of_round(r)
        res, ev_failed = self._exchange(grid, "evaluate", r, seg, np.arange(self.layout.devices), "results")
        groups = {}
        acc = float("nan")
        if res:
            acc = float(res["correct"].sum() / max(res["total"].sum(), 1))
            grp = self._group[res["device_ids"]]
            for gi, name in enumerate(self.layout.groups):
                sel = grp == gi
                if sel.any():
                    groups[name] = float(res["correct"][sel].sum() / res["total"][sel].sum())
        gacc = float(np.mean(predict_int8(self.head, self._gtest) == self._gtest_y))
        down, up = traffic if isinstance(traffic, tuple) else (0, 0)
        row = RoundRow(r, seg, acc, gacc, loss, trained, rejected, failed + ev_failed, down, up,
                       round(wall + time.time() - t0, 3), groups)
        self.rows.append(row)
        if self.progress:
            self.progress(row, self.scenario.rounds)
