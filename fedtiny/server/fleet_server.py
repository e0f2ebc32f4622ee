"""The federated round loop over gateways: global int8 head down, device heads up, aggregate, re-quantize,
redeploy, evaluate, checkpoint.

Per round: which devices are awake (duty cycle, battery; the others are asleep), which are sampled, which
sampled devices drop out (``fleet.dropout``: they start the round, spend its energy and never report), each
sampled device's virtual time (compute from MACs and clock, link from bytes and rate) against the round
deadline (stragglers are dropped), the gateways train the rest, updates are validated (NaN/Inf, wrong shape, absurd
norm: rejected and counted), aggregated per device, re-quantized to int8 and redeployed. Evaluation of the
deployed int8 head on every device's local test data is done against the shared sample pool (every device
holds the same head and draws its test data from the pool, so predicting each pool sample once and summing
per device gives exactly the per-device counts). Every accuracy comes with its 95% interval over devices and pool
samples (fedtiny/report/uncertainty.py). Baselines (static model, local-only on-device learning) and
personalization run on a seeded subset of devices in the same run.

The transport is Flower's Grid (one Flower node per gateway) or, for tests, an in-process call of the same
gateway code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.config.derived import train_config
from fedtiny.config.schema import Scenario
from fedtiny.fleet.boards import get_board
from fedtiny.fleet.data import FleetLayout, uniform
from fedtiny.fleet.recorded import open_fleet_data
from fedtiny.ondevice import (
    Int8Head,
    TrainConfig,
    dequantize_head,
    device_budget,
    quantize_head,
    train_heads,
)
from fedtiny.ondevice.quant import dequantize
from fedtiny.records import decode_int8_delta, float_update_bytes, head_patch_bytes
from fedtiny.report.results import RoundRow
from fedtiny.report.uncertainty import Estimate, iid, paired_se, two_way
from fedtiny.server.aggregate import validate_updates
from fedtiny.server.checkpoint import load_checkpoint, save_checkpoint
from fedtiny.server.strategy import DeviceStrategy
from fedtiny.server.transports import Transport

ProgressFn = Callable[[RoundRow, int], None]
#: device_rounds status codes (``status`` = index); asleep devices are in ``awake_bits`` / ``asleep_count``
STATUS = ("trained", "straggler", "rejected", "dropped", "asleep")
CHECKPOINT = "checkpoint"


@dataclass
class FleetServer:
    scenario: Scenario
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
        s = self.scenario
        self.head = self.initial_head
        self.data = open_fleet_data(self.fleet_dir)
        self._per_tensor = bool(self.data.meta.get("per_tensor", False))
        self._calib = np.load(self.fleet_dir / "calib_feats.npy")
        self._gtest = np.load(self.fleet_dir / "global_test_feats.npy")
        self._gtest_y = np.load(self.fleet_dir / "global_test_labels.npy")
        self._group = np.load(self.fleet_dir / "group.npy")
        self._board = np.load(self.fleet_dir / "board.npy")
        self._speed = np.load(self.fleet_dir / "speed.npy")
        self.boards = [get_board(b) for b in self.data.meta["boards"]]
        self.strategy = DeviceStrategy.from_scenario(s)  # Flower's strategy, devices as its clients
        self.train_cfg = train_config(s)
        k = s.fleet.devices
        self.battery = np.full(k, s.fleet.battery_j, dtype=np.float64)
        self._labels_flat = np.tile(self.data.labels, self.data.num_variants)
        self._test_n = self.data.test_counts(np.arange(k))
        self._test_idx: dict[int, np.ndarray] = {}
        self.round = 0
        # comparison subset: baselines and personalization
        nb = min(s.eval.baseline_devices, k)
        self.subset = (
            np.sort(np.random.default_rng([s.seed, 0xBA5E]).choice(k, nb, replace=False))
            if nb < k
            else np.arange(k)
        )
        f0 = dequantize_head(self.initial_head)
        self.loc_w = np.broadcast_to(f0.weights, (nb, *f0.weights.shape)).copy()
        self.loc_b = np.broadcast_to(f0.bias, (nb, *f0.bias.shape)).copy()
        self.per_w, self.per_b = self.loc_w.copy(), self.loc_b.copy()
        self.per_has = np.zeros(nb, dtype=bool)
        self.curves: dict[str, dict[str, list[float]]] = {}
        self._static_correct = self._pool_correct(self.initial_head)
        self.events = [(e.group, e.at) for e in s.drift if e.group != "fleet"]
        # the "old distribution" of a drifted group: its test data before its first event after round 0
        # (one curve per group, however many events share the group)
        self.old_at: dict[str, int] = {}
        for gname, at in sorted(self.events, key=lambda ga: ga[1]):
            if at >= 1 and gname in self.layout.groups:
                self.old_at.setdefault(gname, at)

    # -- helpers ---------------------------------------------------------------------------------
    def _cfg(self, r: int, seg: int) -> dict[str, Any]:
        s = self.scenario
        c = self.train_cfg
        return {
            "round": r,
            "segment": seg,
            "seed": s.seed,
            "fleet-dir": str(self.fleet_dir),
            "epochs": c.epochs,
            "batch-size": c.batch_size,
            "lr": c.lr,
            "momentum": c.momentum,
            "weight-decay": c.weight_decay,
            "prox-mu": c.prox_mu,
            "uplink": s.strategy.uplink,
        }

    def _per_gateway(self, devices: np.ndarray) -> dict[int, np.ndarray]:
        by_gw = devices // self.layout.devices_per_gateway
        cuts = np.flatnonzero(np.diff(by_gw)) + 1
        return {
            int(chunk[0] // self.layout.devices_per_gateway): chunk
            for chunk in np.split(devices, cuts)
            if len(chunk)
        }

    def _pool_correct(self, head: Int8Head) -> np.ndarray:
        return self.data.predict(head, np.asarray(self.data.pool2d)) == self._labels_flat

    def test_idx(self, seg: int) -> np.ndarray:
        if seg not in self._test_idx:
            k = self.layout.devices
            parts = [self.data.test_indices(np.arange(a, min(a + 20000, k)), seg) for a in range(0, k, 20000)]
            self._test_idx[seg] = np.concatenate(parts).astype(np.int32)
        return self._test_idx[seg]

    def available(self, r: int) -> np.ndarray:
        """Devices awake in round ``r`` (duty cycle) with enough battery; the others are asleep."""
        f = self.scenario.fleet
        d = np.arange(self.layout.devices)
        ok = np.ones(len(d), dtype=bool)
        if f.duty_cycle < 1:
            ok &= uniform(self.scenario.seed, 0xA11, r, d) < f.duty_cycle
        if f.battery_j > 0:
            ok &= self.battery >= max(f.battery_min_j, 1e-12)
        return ok

    def dropped(self, r: int, sampled: np.ndarray) -> np.ndarray:
        """Which sampled devices drop out of round ``r`` (``fleet.dropout``): they receive the head and train,
        then never report (link lost, reset): their energy is spent, no update arrives."""
        f = self.scenario.fleet
        if f.dropout <= 0:
            return np.zeros(len(sampled), dtype=bool)
        return uniform(self.scenario.seed, 0xD20, r, sampled) < f.dropout

    def sample(self, r: int, avail: np.ndarray) -> np.ndarray:
        k = self.layout.devices
        m = max(1, int(round(self.scenario.strategy.fraction * k)))
        pool = np.flatnonzero(avail)
        if m >= len(pool):
            return pool
        rng = np.random.default_rng([self.scenario.seed, 0x5A3, r])
        return np.sort(rng.choice(pool, size=m, replace=False))

    def device_costs(
        self, devices: np.ndarray, count: int, uplink: bool = True
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(virtual seconds, joules) of one training round per device, and bytes down/up per device
        (``uplink=False``: a device that drops out before sending its update)."""
        assert self.head is not None
        c, d = self.head.weights.shape
        macs = device_budget(c, d, self.scenario.fleet.cache_size, count, self.train_cfg).train_macs
        down = head_patch_bytes(self.head)
        up = c * d + 8 * c + 8 if self.scenario.strategy.uplink == "int8" else float_update_bytes(c, d)
        secs = np.zeros(len(devices))
        joules = np.zeros(len(devices))
        bid = self._board[devices]
        t = self.train_cfg
        fixed = not (
            t.momentum or t.weight_decay or t.prox_mu
        )  # boards without an FPU train in integers then
        for i, b in enumerate(self.boards):
            sel = bid == i
            radio = down + up if uplink else down
            secs[sel] = b.compute_seconds(macs, fixed) / self._speed[devices[sel]] + b.link_seconds(
                radio, 2 if uplink else 1
            )
            joules[sel] = b.energy_j(macs, radio, fixed)
        return secs, joules, down, up

    # -- rounds ----------------------------------------------------------------------------------
    def run(self, transport: Transport) -> None:
        transport.connect(self.layout.gateways)
        if self.round == 0 and not self.rows:
            t0 = time.time()
            self._evaluate(0, RoundRow(0, 0, np.nan, np.nan, np.nan, 0, 0, 0, 0, 0, 0.0), t0)
            self._checkpoint()
        for r in range(self.round + 1, self.scenario.rounds + 1):
            self._round(transport, r)
            self._checkpoint()
            if self.stop_after and r >= self.stop_after:
                raise KeyboardInterrupt(f"stopped after round {r} (stop_after)")

    def _round(self, transport: Transport, r: int) -> None:
        t0 = time.time()
        s = self.scenario
        assert self.head is not None
        seg = self.layout.segment_of_round(r)
        avail = self.available(r)
        sampled = self.sample(r, avail)
        count = int(self.data.cache_counts(sampled, r).max(initial=1))  # the fullest cache bounds the work
        secs, joules, down, up = self.device_costs(sampled, count)
        drop = self.dropped(r, sampled)
        if drop.any():  # a dropped device downloaded the head and trained, but never sends its update
            d_secs, d_joules, _, _ = self.device_costs(sampled[drop], count, uplink=False)
            secs[drop], joules[drop] = d_secs, d_joules
        on_time = (
            secs <= s.strategy.deadline_s if s.strategy.deadline_s > 0 else np.ones(len(sampled), dtype=bool)
        )
        finished = on_time & ~drop
        trainers = sampled[finished]
        parts, failed = (
            transport.exchange("train", self.head, self._cfg(r, seg), self._per_gateway(trainers))
            if len(trainers)
            else ([], 0)
        )
        g = dequantize_head(self.head)
        rejected, loss, trained = 0, float("nan"), 0
        reasons: dict[str, int] = {}
        accepted_ids = np.zeros(0, dtype=np.int64)
        ws, bs, ids, ns, ls = [], [], [], [], []
        for p in parts:
            if "delta_q" in p:
                q, sc = p["delta_q"], p["delta_scale"]
                if q.ndim != 3 or sc.shape != q.shape[:2]:
                    w = np.full(
                        (len(p["device_ids"]), 0, 0), np.nan, np.float32
                    )  # wrong shape: rejected below
                else:
                    w = g.weights[None] + decode_int8_delta(q, sc)  # a NaN scale makes the row non-finite
            else:
                w = p.get("weights", np.zeros((0,)))
            val = validate_updates(w, p["bias"], g.weights, g.bias, s.strategy.max_update_norm)
            for key, cnt in val.reasons.items():
                reasons[key] = reasons.get(key, 0) + cnt
            rejected += val.rejected
            ok = val.accepted
            if ok.any():
                ws.append(w[ok])
                bs.append(p["bias"][ok])
                ids.append(p["device_ids"][ok])
                ns.append(p["num_examples"][ok])
                ls.append(p["loss"][ok])
        if ws:
            w, b, ids_, n, dl = (np.concatenate(x) for x in (ws, bs, ids, ns, ls))
            order = np.argsort(ids_, kind="stable")  # aggregation order independent of reply order
            w, b, ids_, n, dl = w[order], b[order], ids_[order], n[order], dl[order]
            trained = len(ids_)
            accepted_ids = ids_
            new = self.strategy.aggregate(r, g, w, b, n, ids_, dl)
            if new is not None:  # None: the strategy kept the head (e.g. Bulyan with too few updates)
                self.head = quantize_head(
                    new,
                    self.head.input_scale,
                    self.head.input_zero_point,
                    self._calib,
                    per_tensor=self._per_tensor,
                )
            loss = float(np.mean(dl.astype(np.float64)))
            if s.strategy.personalize > 0:
                pos = np.searchsorted(self.subset, ids_)
                hit = (pos < len(self.subset)) & (self.subset[np.minimum(pos, len(self.subset) - 1)] == ids_)
                self.per_w[pos[hit]], self.per_b[pos[hit]] = w[hit], b[hit]
                self.per_has[pos[hit]] = True
        self.rejected_total += rejected
        for key, cnt in reasons.items():
            self.rejected_reasons[key] = self.rejected_reasons.get(key, 0) + cnt
        # energy and battery: every sampled device computed (stragglers too); the fleet receives the new head
        k = self.layout.devices
        redeploy = head_patch_bytes(self.head)
        redeploy_j = np.array([b.energy_per_radio_byte_j * redeploy for b in self.boards])[self._board]
        if s.fleet.battery_j > 0:
            self.battery[sampled] -= joules
            self.battery -= redeploy_j
            self.battery = np.clip(self.battery + s.fleet.harvest_j_per_round, 0.0, s.fleet.battery_j)
        self._log_devices(r, avail, sampled, drop, on_time, accepted_ids, secs, joules, down, up)
        if s.eval.baselines:
            self._local_only_step(r, avail)
        waited = secs[~drop].max(
            initial=0.0
        )  # the server waits for the devices that report (or the deadline)
        row = RoundRow(
            r,
            seg,
            np.nan,
            np.nan,
            loss,
            trained,
            rejected,
            failed,
            down * len(sampled) + redeploy * k,
            up * len(trainers),
            0.0,
            devices_available=int(avail.sum()),
            devices_sampled=len(sampled),
            stragglers=int((~on_time & ~drop).sum()),
            devices_dropped=int(drop.sum()),
            virtual_s=float(min(waited, s.strategy.deadline_s) if s.strategy.deadline_s > 0 else waited),
            energy_j=float(joules.sum() + redeploy_j.sum()),
            energy_mj_per_trainer=float(1e3 * joules.mean()) if len(joules) else 0.0,
        )
        self._evaluate(r, row, t0)

    def _log_devices(
        self,
        r: int,
        avail: np.ndarray,
        sampled: np.ndarray,
        drop: np.ndarray,
        on_time: np.ndarray,
        accepted: np.ndarray,
        secs: np.ndarray,
        joules: np.ndarray,
        down: int,
        up: int,
    ) -> None:
        """device_rounds/rNNNNNN.npz: one row per sampled device (``STATUS``: trained, straggler, rejected,
        dropped) with its virtual time, energy and bytes; the devices asleep in the round as a bit mask over
        all devices (``awake_bits``: bit k set = device k awake) and a count (``asleep_count``), so that a
        100,000-device fleet costs 12.5 kB per round for them. Awake devices that were not sampled are the
        rest (``idle``)."""
        if self.out_dir is None:
            return
        status = np.where(on_time, STATUS.index("rejected"), STATUS.index("straggler")).astype(np.int8)
        status[np.isin(sampled, accepted)] = STATUS.index("trained")
        status[drop] = STATUS.index("dropped")
        d = self.out_dir / "device_rounds"
        d.mkdir(exist_ok=True)
        np.savez(
            d / f"r{r:06d}.npz",
            round=np.full(len(sampled), r, dtype=np.int32),
            device=sampled.astype(np.int32),
            status=status,
            virtual_s=secs.astype(np.float32),
            energy_j=joules.astype(np.float32),
            bytes_down=np.full(len(sampled), down, dtype=np.int32),
            bytes_up=np.where(on_time & ~drop, up, 0).astype(np.int32),
            asleep_round=np.array([r], dtype=np.int32),
            asleep_count=np.array([int((~avail).sum())], dtype=np.int32),
            awake_bits=np.packbits(avail)[None, :],
        )

    def _local_only_step(self, r: int, avail: np.ndarray) -> None:
        """Local-only on-device learning: each subset device trains its own head, never federated."""
        assert self.head is not None
        sel = np.flatnonzero(avail[self.subset])
        if not len(sel):
            return
        devs = self.subset[sel]
        feats, labels = self.data.train(devs, r)
        cfg = TrainConfig(
            self.train_cfg.epochs,
            self.train_cfg.batch_size,
            self.train_cfg.lr,
            self.train_cfg.momentum,
            self.train_cfg.weight_decay,
            0.0,
        )
        res = train_heads(
            self.loc_w[sel],
            self.loc_b[sel],
            feats,
            labels.astype(np.int64),
            self.data.cache_counts(devs, r),
            cfg,
            input_scale=self.head.input_scale,
            input_zero_point=self.head.input_zero_point,
            seed=self.scenario.seed ^ 0x10CA1,
            round_=r,
            device_ids=devs,
        )
        ok = np.isfinite(res.weights).all(axis=(1, 2))
        self.loc_w[sel[ok]], self.loc_b[sel[ok]] = res.weights[ok], res.bias[ok]

    def _float_correct(self, w: np.ndarray, b: np.ndarray, devices: np.ndarray, seg: int) -> np.ndarray:
        """Correctness [K, n] of per-device float heads ``w`` [K, C, D] on the test data of ``devices`` [K]."""
        assert self.head is not None
        feats, labels = self.data.gather(self.test_idx(seg)[devices])
        x = dequantize(feats, self.head.input_scale, self.head.input_zero_point)
        pred = np.argmax(np.matmul(x, w.transpose(0, 2, 1)) + b[:, None, :], axis=-1)
        return np.asarray(pred == labels)

    def _valid(self, devs: np.ndarray, width: int) -> np.ndarray | None:
        """Which test observations of ``devs`` are real (recorded fleets pad shorter test sets); None: all."""
        n = self._test_n[devs]
        return None if (n >= width).all() else np.arange(width)[None, :] < n[:, None]

    def _estimates(self, y: np.ndarray, devs: np.ndarray, idx: np.ndarray) -> dict[str, Estimate]:
        """Pooled accuracy with its 95% interval (fedtiny/report/uncertainty.py) of the test observations
        ``y`` [K, n] (pool samples ``idx`` [K, n]) of ``devs``: all devices, then per group."""
        valid = self._valid(devs, y.shape[1])
        out = {"all": two_way(y, idx, valid)}
        grp = self._group[devs]
        for gi, name in enumerate(self.layout.groups):
            sel = grp == gi
            if sel.any():
                out[name] = two_way(y[sel], idx[sel], None if valid is None else valid[sel])
        return out

    def _diff_se(self, ya: np.ndarray, yb: np.ndarray, devs: np.ndarray, idx: np.ndarray) -> dict[str, float]:
        """Paired standard error of accuracy(a) - accuracy(b) on the same observations: all, then per group."""
        valid = self._valid(devs, ya.shape[1])
        out = {"all": paired_se(ya, yb, idx, valid)}
        grp = self._group[devs]
        for gi, name in enumerate(self.layout.groups):
            sel = grp == gi
            if sel.any():
                out[name] = paired_se(ya[sel], yb[sel], idx[sel], None if valid is None else valid[sel])
        return out

    def _curve(self, method: str, accs: dict[str, float]) -> None:
        cur = self.curves.setdefault(method, {})
        for gname, v in accs.items():
            cur.setdefault(gname, [float("nan")] * (self.round_index()))
            cur[gname].append(v)

    def _curve_est(self, method: str, ests: dict[str, Estimate]) -> None:
        """``curves[method]`` (accuracy) and ``curves[method + "_lo" / "_hi" / "_se"]`` (95% interval, SE)."""
        self._curve(method, {g: e.p for g, e in ests.items()})
        self._curve(f"{method}_lo", {g: e.lo for g, e in ests.items()})
        self._curve(f"{method}_hi", {g: e.hi for g, e in ests.items()})
        self._curve(f"{method}_se", {g: e.se for g, e in ests.items()})

    def round_index(self) -> int:
        return len(self.rows)

    def _evaluate(self, r: int, row: RoundRow, t0: float) -> None:
        assert self.head is not None
        seg = self.layout.segment_of_round(r)
        idx = self.test_idx(seg)
        fed_pool = self._pool_correct(self.head)
        fed = fed_pool[idx]  # [K, n]: every device's test observations
        all_devs = np.arange(self.layout.devices)
        groups = self._estimates(fed, all_devs, idx)
        tot = groups.pop("all")
        row.accuracy, row.accuracy_lo, row.accuracy_hi = tot.p, tot.lo, tot.hi
        row.group_accuracy = {g: e.p for g, e in groups.items()}
        row.group_accuracy_lo = {g: e.lo for g, e in groups.items()}
        row.group_accuracy_hi = {g: e.hi for g, e in groups.items()}
        gl = iid(self.data.predict(self.head, self._gtest) == self._gtest_y)
        row.accuracy_global, row.accuracy_global_lo, row.accuracy_global_hi = gl.p, gl.lo, gl.hi
        sub = self.subset
        sidx = idx[sub]
        fed_sub = fed[sub]
        self._curve_est("federated", self._estimates(fed_sub, sub, sidx))
        others: dict[str, np.ndarray] = {}
        if self.scenario.eval.baselines:
            others["static"] = self._static_correct[sidx]
            others["local-only"] = self._float_correct(self.loc_w, self.loc_b, sub, seg)
        if self.scenario.strategy.personalize > 0:
            a = np.float32(self.scenario.strategy.personalize)
            g = dequantize_head(self.head)
            pw = np.where(
                self.per_has[:, None, None], a * self.per_w + (1 - a) * g.weights[None], g.weights[None]
            )
            pb = np.where(self.per_has[:, None], a * self.per_b + (1 - a) * g.bias[None], g.bias[None])
            others["personalized"] = self._float_correct(
                pw.astype(np.float32), pb.astype(np.float32), sub, seg
            )
        for meth, y in others.items():
            ests = self._estimates(y, sub, sidx)
            self._curve_est(meth, ests)
            self._curve(f"{meth}_diff_se", self._diff_se(fed_sub, y, sub, sidx))  # SE of federated - meth
            col = {"static": "static", "local-only": "local", "personalized": "personalized"}[meth]
            setattr(row, f"accuracy_{col}", ests["all"].p)
            setattr(row, f"accuracy_{col}_lo", ests["all"].lo)
            setattr(row, f"accuracy_{col}_hi", ests["all"].hi)
        # forgetting: accuracy of each drifted group on its data before its first event (one point per round)
        for gname, at in self.old_at.items():
            old_seg = self.layout.segment_of_round(at - 1)
            old = self.test_idx(old_seg)
            gi = self.layout.groups.index(gname)
            pos = np.flatnonzero(self._group[sub] == gi)
            devs = sub[pos]
            if not len(devs):
                continue
            oidx = old[devs]
            res = {"federated": fed_pool[oidx]}
            if self.scenario.eval.baselines:
                res["static"] = self._static_correct[oidx]
                res["local-only"] = self._float_correct(self.loc_w[pos], self.loc_b[pos], devs, old_seg)
            valid = self._valid(devs, oidx.shape[1])
            for meth, y in res.items():
                self._curve_est(f"{meth}@old", {gname: two_way(y, oidx, valid)})
        row.wall_s = round(row.wall_s + time.time() - t0, 3)
        self.rows.append(row)
        self.round = r
        if self.progress:
            self.progress(row, self.scenario.rounds)

    # -- checkpoints -----------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        if self.out_dir is not None and self.scenario.runtime.checkpoint:
            save_checkpoint(self, self.out_dir / CHECKPOINT)

    def load_checkpoint(self) -> bool:
        """Continue from the last complete checkpoint under out_dir; False if there is none."""
        return self.out_dir is not None and load_checkpoint(self, self.out_dir / CHECKPOINT)
