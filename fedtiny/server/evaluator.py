"""Evaluation of a simulated run: the deployed int8 head on every device's local test data, the baselines
(static model, local-only on-device learning), personalization and forgetting, as round rows and curves.

Evaluation of the deployed int8 head on every device's local test data is done against the shared sample pool
(every device holds the same head and draws its test data from the pool, so predicting each pool sample once
and summing per device gives exactly the per-device counts). Every accuracy comes with its 95% interval over
devices and pool samples (fedtiny/uncertainty.py). Baselines and personalization run on a seeded subset
of devices (``eval.baseline_devices``) in the same run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtiny.fleet.data import FleetData, FleetLayout
from fedtiny.fleet.labels import LabelSchedule, fleet_schedule, label_view
from fedtiny.ondevice import (
    FloatHead,
    Int8Head,
    TrainConfig,
    TrainJob,
    dequantize_head,
    quantize_head,
    train_heads,
)
from fedtiny.results import RoundRow
from fedtiny.server.run_state import EvalState
from fedtiny.server.spec import RoundSpec
from fedtiny.uncertainty import Estimate, iid, paired_se, two_way, two_way_by_group

#: RoundRow column stem of each comparison method
COLUMN = {"static": "static", "local-only": "local", "personalized": "personalized"}


class Evaluator:
    """Rows and curves of the deployed head and of the comparison methods; owns their state (``state``)."""

    def __init__(
        self,
        spec: RoundSpec,
        layout: FleetLayout,
        data: FleetData,
        fleet_dir: Path,
        initial_head: Int8Head,
        train_cfg: TrainConfig,
    ) -> None:
        s = spec
        self.spec = spec
        self.layout = layout
        self.data = data
        self.train_cfg = train_cfg
        self.gtest = np.load(fleet_dir / "global_test_feats.npy")
        self.gtest_y = np.load(fleet_dir / "global_test_labels.npy")
        self.group = np.load(fleet_dir / "group.npy")
        self.calib = np.load(fleet_dir / "calib_feats.npy")  # what re-quantizes a head (as the server does)
        self.per_tensor = bool(data.meta.get("per_tensor", False))
        self.initial_head = initial_head
        k = s.fleet.devices
        self.labels_flat = np.tile(data.labels, data.num_variants)
        self.test_n = data.test_counts(np.arange(k))
        self._test_idx: dict[int, np.ndarray] = {}
        # comparison subset: baselines and personalization
        nb = min(s.eval.baseline_devices, k)
        self.subset = (
            np.sort(np.random.default_rng([s.seed, 0xBA5E]).choice(k, nb, replace=False))
            if nb < k
            else np.arange(k)
        )
        f0 = dequantize_head(initial_head)
        loc_w = np.broadcast_to(f0.weights, (nb, *f0.weights.shape)).copy()
        loc_b = np.broadcast_to(f0.bias, (nb, *f0.bias.shape)).copy()
        self.state = EvalState(loc_w, loc_b, loc_w.copy(), loc_b.copy(), np.zeros(nb, dtype=bool))
        self.static_correct = self.pool_correct(initial_head)
        # the "old distribution" of a drifted group: its test data before its first event after round 0
        # (one curve per group, however many events share the group)
        self.old_at: dict[str, int] = {}
        for gname, at in sorted(
            ((e.group, e.at) for e in s.drift if e.group != "fleet"), key=lambda ga: ga[1]
        ):
            if at >= 1 and gname in layout.groups:
                self.old_at.setdefault(gname, at)

    def pool_correct(self, head: Int8Head) -> np.ndarray:
        """Whether ``head`` classifies each pool sample (every variant) right."""
        correct: np.ndarray = self.data.predict(head, np.asarray(self.data.pool2d)) == self.labels_flat
        return correct

    def test_idx(self, seg: int) -> np.ndarray:
        """Pool indices [K, n] of every device's test data in drift segment ``seg`` (cached)."""
        if seg not in self._test_idx:
            k = self.layout.devices
            parts = [self.data.test_indices(np.arange(a, min(a + 20000, k)), seg) for a in range(0, k, 20000)]
            self._test_idx[seg] = np.concatenate(parts).astype(np.int32)
        return self._test_idx[seg]

    # -- comparison methods ----------------------------------------------------------------------
    def personal_updates(self, device_ids: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
        """Keep the accepted updates ``w``, ``b`` of the subset devices among ``device_ids`` (sorted)."""
        st, sub = self.state, self.subset
        pos = np.searchsorted(sub, device_ids)
        hit = (pos < len(sub)) & (sub[np.minimum(pos, len(sub) - 1)] == device_ids)
        st.per_w[pos[hit]], st.per_b[pos[hit]] = w[hit], b[hit]
        st.per_has[pos[hit]] = True

    def local_only_step(self, r: int, avail: np.ndarray, head: Int8Head) -> None:
        """Local-only on-device learning: each awake subset device trains its own head, never federated."""
        st = self.state
        sel = np.flatnonzero(avail[self.subset])
        if not len(sel):
            return
        devs = self.subset[sel]
        idx, _ = self.data.cache_indices(devs, r)
        counts = self.data.cache_counts(devs, r)
        labels, weights = self.data.gather(idx)[1], None
        sched = self._label_schedule(head)
        if (
            sched is not None
        ):  # partial labels: the same training sets as the fleet's devices (fleet/labels.py);
            # a local-only board pseudo-labels with the model it was shipped with (it never receives another)
            view = label_view(sched, self.data, devs, r, idx, counts, self.initial_head)
            idx, labels, counts, weights = view.idx, view.labels, view.counts, view.weights
        feats = self.data.gather(idx)[0]
        t = self.train_cfg
        cfg = TrainConfig(t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, 0.0)
        res = train_heads(
            st.loc_w[sel],
            st.loc_b[sel],
            feats,
            np.asarray(labels, dtype=np.int64),
            counts,
            TrainJob(
                cfg,
                input_scale=head.input_scale,
                input_zero_point=head.input_zero_point,
                seed=self.spec.seed ^ 0x10CA1,
                round_=r,
                device_ids=devs,
                sample_weights=weights,
            ),
        )
        ok = np.isfinite(res.weights).all(axis=(1, 2))
        st.loc_w[sel[ok]], st.loc_b[sel[ok]] = res.weights[ok], res.bias[ok]

    def _label_schedule(self, head: Int8Head) -> LabelSchedule | None:
        """The fleet's label process (None: every sample labelled), read once."""
        if not hasattr(self, "_labels"):
            self._labels = fleet_schedule(self.data, head.num_classes)
        return self._labels

    # -- statistics ------------------------------------------------------------------------------
    def _int8_correct(
        self, deployed: Int8Head, w: np.ndarray, b: np.ndarray, devices: np.ndarray, seg: int
    ) -> np.ndarray:
        """Correctness [K, n] of per-device heads ``w`` [K, C, D], ``b`` [K, C] on the test data of ``devices``
        [K], each scored as a board would run it: re-quantized to int8 exactly as a deployed head is
        (docs/ondevice.md §4, the fleet's calibration features) and predicted through the model's tail. A head
        that is still the float image of ``deployed`` (a device that never trained, a personal head with no
        update yet) is ``deployed`` itself, so every method agrees before any learning."""
        feats, labels = self.data.gather(self.test_idx(seg)[devices])
        g = dequantize_head(deployed)
        out = np.empty(labels.shape, dtype=bool)
        for k in range(len(devices)):
            if np.array_equal(w[k], g.weights) and np.array_equal(b[k], g.bias):
                q = deployed
            else:
                fh = FloatHead(np.asarray(w[k], np.float32), np.asarray(b[k], np.float32))
                q = quantize_head(
                    fh, deployed.input_scale, deployed.input_zero_point, self.calib, self.per_tensor
                )
            out[k] = self.data.predict(q, feats[k]) == labels[k]
        return out

    def _valid(self, devs: np.ndarray, width: int) -> np.ndarray | None:
        """Which test observations of ``devs`` are real (recorded fleets pad shorter test sets); None: all."""
        n = self.test_n[devs]
        return None if (n >= width).all() else np.arange(width)[None, :] < n[:, None]

    def _estimates(
        self, y: np.ndarray | None, devs: np.ndarray, idx: np.ndarray, pool: np.ndarray | None = None
    ) -> dict[str, Estimate]:
        """Pooled accuracy with its 95% interval (fedtiny/uncertainty.py) of the test observations
        ``y`` [K, n] (pool samples ``idx`` [K, n]; or, with ``pool``, ``pool[idx]``) of ``devs``: all devices,
        then per group."""
        groups = self.layout.groups
        every, per_group = two_way_by_group(
            y, idx, self.group[devs], len(groups), self._valid(devs, idx.shape[1]), pool
        )
        return {"all": every} | {groups[gi]: est for gi, est in per_group.items()}

    def _diff_se(self, ya: np.ndarray, yb: np.ndarray, devs: np.ndarray, idx: np.ndarray) -> dict[str, float]:
        """Paired standard error of accuracy(a) - accuracy(b) on the same observations: all, then per group."""
        valid = self._valid(devs, ya.shape[1])
        out = {"all": paired_se(ya, yb, idx, valid)}
        grp = self.group[devs]
        for gi, name in enumerate(self.layout.groups):
            sel = grp == gi
            if sel.any():
                out[name] = paired_se(ya[sel], yb[sel], idx[sel], None if valid is None else valid[sel])
        return out

    def _curve(self, index: int, method: str, accs: dict[str, float]) -> None:
        """Append round ``index``'s values (a curve first seen later starts with NaN for earlier rounds)."""
        cur = self.state.curves.setdefault(method, {})
        for gname, v in accs.items():
            cur.setdefault(gname, [float("nan")] * index)
            cur[gname].append(v)

    def _curve_est(self, index: int, method: str, ests: dict[str, Estimate]) -> None:
        """``curves[method]`` (accuracy) and ``curves[method + "_lo" / "_hi" / "_se"]`` (95% interval, SE)."""
        self._curve(index, method, {g: e.p for g, e in ests.items()})
        self._curve(index, f"{method}_lo", {g: e.lo for g, e in ests.items()})
        self._curve(index, f"{method}_hi", {g: e.hi for g, e in ests.items()})
        self._curve(index, f"{method}_se", {g: e.se for g, e in ests.items()})

    # -- one round -------------------------------------------------------------------------------
    def evaluate(self, r: int, row: RoundRow, head: Int8Head, index: int) -> None:
        """Fill ``row``'s accuracies of round ``r`` (deployed ``head``) and append point ``index`` of every
        curve: federated, the baselines, personalized, and each drifted group on its old data."""
        s, st = self.spec, self.state
        seg = self.layout.segment_of_round(r)
        idx = self.test_idx(seg)
        fed_pool = self.pool_correct(head)  # every device's test observations are fed_pool[idx] [K, n]
        groups = self._estimates(None, np.arange(self.layout.devices), idx, fed_pool)
        tot = groups.pop("all")
        row.accuracy, row.accuracy_lo, row.accuracy_hi = tot.p, tot.lo, tot.hi
        row.group_accuracy = {g: e.p for g, e in groups.items()}
        row.group_accuracy_lo = {g: e.lo for g, e in groups.items()}
        row.group_accuracy_hi = {g: e.hi for g, e in groups.items()}
        gl = iid(self.data.predict(head, self.gtest) == self.gtest_y)
        row.accuracy_global, row.accuracy_global_lo, row.accuracy_global_hi = gl.p, gl.lo, gl.hi
        sub = self.subset
        sidx = idx[sub]
        fed_sub = fed_pool[sidx]
        self._curve_est(index, "federated", self._estimates(fed_sub, sub, sidx))
        others: dict[str, np.ndarray] = {}
        if s.eval.baselines:
            others["static"] = self.static_correct[sidx]
            others["local-only"] = self._int8_correct(self.initial_head, st.loc_w, st.loc_b, sub, seg)
        if s.strategy.personalize > 0:
            a = np.float32(s.strategy.personalize)
            g = dequantize_head(head)
            pw = np.where(
                st.per_has[:, None, None], a * st.per_w + (1 - a) * g.weights[None], g.weights[None]
            )
            pb = np.where(st.per_has[:, None], a * st.per_b + (1 - a) * g.bias[None], g.bias[None])
            others["personalized"] = self._int8_correct(
                head, pw.astype(np.float32), pb.astype(np.float32), sub, seg
            )
        for meth, y in others.items():
            ests = self._estimates(y, sub, sidx)
            self._curve_est(index, meth, ests)
            self._curve(
                index, f"{meth}_diff_se", self._diff_se(fed_sub, y, sub, sidx)
            )  # SE of federated - meth
            col = COLUMN[meth]
            setattr(row, f"accuracy_{col}", ests["all"].p)
            setattr(row, f"accuracy_{col}_lo", ests["all"].lo)
            setattr(row, f"accuracy_{col}_hi", ests["all"].hi)
        # forgetting: accuracy of each drifted group on its data before its first event (one point per round)
        for gname, at in self.old_at.items():
            old_seg = self.layout.segment_of_round(at - 1)
            old = self.test_idx(old_seg)
            gi = self.layout.groups.index(gname)
            pos = np.flatnonzero(self.group[sub] == gi)
            devs = sub[pos]
            if not len(devs):
                continue
            oidx = old[devs]
            res = {"federated": fed_pool[oidx]}
            if s.eval.baselines:
                res["static"] = self.static_correct[oidx]
                res["local-only"] = self._int8_correct(
                    self.initial_head, st.loc_w[pos], st.loc_b[pos], devs, old_seg
                )
            valid = self._valid(devs, oidx.shape[1])
            for meth, y in res.items():
                self._curve_est(index, f"{meth}@old", {gname: two_way(y, oidx, valid)})
