"""The fleet model of a simulated run: which devices are awake, sampled and dropped each round, what a round
costs each device (virtual seconds from MACs and clock, link time from bytes and rate, joules), and their
batteries.

Per round: which devices are awake (duty cycle, battery; the others are asleep), which are sampled, which
sampled devices drop out (``fleet.dropout``: they start the round, spend its energy and never report), each
sampled device's virtual time against the round deadline (stragglers are dropped). After aggregation every
sampled device pays its round's energy and the whole fleet pays for receiving the new head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.fleet.boards import Board, get_board
from fedtiny.fleet.data import FleetData, FleetLayout, uniform
from fedtiny.ondevice import Int8Head, TrainConfig, device_budget
from fedtiny.records import float_update_bytes, head_patch_bytes
from fedtiny.server.run_state import FleetState
from fedtiny.server.spec import RoundSpec

#: device_rounds status codes (``status`` = index); asleep devices are in ``awake_bits`` / ``asleep_count``
STATUS = ("trained", "straggler", "rejected", "dropped", "asleep")
#: the status names of a fleet with partial labels: one more, a device that had no label to train on
STATUS_LABELS = (*STATUS, "no_labels")


def sample_devices(seed: int, r: int, fraction: float, devices: int, avail: np.ndarray) -> np.ndarray:
    """The devices sampled in round ``r``: ``max(1, round(fraction * devices))`` of all ``devices``, drawn
    (seeded by ``seed`` and ``r``) from the available ones (``avail``: bool [devices]); sorted indices. The
    simulation (:meth:`FleetModel.sample`) and the field trial's server (fedtiny/field/server.py) both draw
    with it, so a trial and a simulation of one scenario sample alike."""
    m = max(1, int(round(fraction * devices)))
    pool = np.flatnonzero(avail)
    if m >= len(pool):
        return pool
    rng = np.random.default_rng([seed, 0x5A3, r])
    return np.sort(rng.choice(pool, size=m, replace=False))


@dataclass
class RoundPlan:
    """Who takes part in round ``round`` and what it costs them, decided before any device trains."""

    round: int
    avail: np.ndarray  # bool [K]: awake, with enough battery
    sampled: np.ndarray  # device ids, sorted
    drop: np.ndarray  # bool [S]: sampled devices that drop out (train, never report)
    on_time: np.ndarray  # bool [S]: within the deadline
    secs: np.ndarray  # float [S]: virtual seconds of each sampled device's round
    joules: np.ndarray  # float [S]
    down: int  # bytes per device: head down
    up: int  # bytes per device: update up

    @property
    def trainers(self) -> np.ndarray:
        """The devices whose update arrives: on time and not dropped."""
        out: np.ndarray = self.sampled[self.on_time & ~self.drop]
        return out

    @property
    def waited(self) -> float:
        """Virtual seconds the server waits: the slowest device that reports (the deadline caps it)."""
        return float(self.secs[~self.drop].max(initial=0.0))


class FleetModel:
    """Availability, sampling, virtual clock, energy and battery of the devices of ``layout``."""

    def __init__(
        self,
        spec: RoundSpec,
        layout: FleetLayout,
        data: FleetData,
        boards: list[Board],
        board_of: np.ndarray,
        speed: np.ndarray,
        train_cfg: TrainConfig,
    ) -> None:
        self.spec = spec
        self.layout = layout
        self.data = data
        self.boards = boards
        self.board_of = board_of  # board index per device
        self.speed = speed  # clock speed factor per device
        self.train_cfg = train_cfg
        self.state = FleetState(np.full(layout.devices, spec.fleet.battery_j, dtype=np.float64))

    @classmethod
    def from_fleet_dir(
        cls, spec: RoundSpec, layout: FleetLayout, data: FleetData, fleet_dir: Path
    ) -> FleetModel:
        """The fleet of a prepared fleet directory (``board.npy``, ``speed.npy``, the boards in its meta)."""
        boards = [get_board(b) for b in data.meta["boards"]]
        board_of, speed = np.load(fleet_dir / "board.npy"), np.load(fleet_dir / "speed.npy")
        return cls(spec, layout, data, boards, board_of, speed, spec.train)

    def available(self, r: int) -> np.ndarray:
        """Devices awake in round ``r`` (duty cycle) with enough battery; the others are asleep."""
        f = self.spec.fleet
        d = np.arange(self.layout.devices)
        ok = np.ones(len(d), dtype=bool)
        if f.duty_cycle < 1:
            ok &= uniform(self.spec.seed, 0xA11, r, d) < f.duty_cycle
        if f.battery_j > 0:
            ok &= self.state.battery >= max(f.battery_min_j, 1e-12)
        return ok

    def dropped(self, r: int, sampled: np.ndarray) -> np.ndarray:
        """Which sampled devices drop out of round ``r`` (``fleet.dropout``): they receive the head and train,
        then never report (link lost, reset): their energy is spent, no update arrives."""
        f = self.spec.fleet
        if f.dropout <= 0:
            return np.zeros(len(sampled), dtype=bool)
        return uniform(self.spec.seed, 0xD20, r, sampled) < f.dropout

    def sample(self, r: int, avail: np.ndarray) -> np.ndarray:
        """``strategy.fraction`` of all devices, drawn (seeded per round) from the available ones."""
        return sample_devices(self.spec.seed, r, self.spec.strategy.fraction, self.layout.devices, avail)

    def device_costs(
        self, head: Int8Head, devices: np.ndarray, count: int, uplink: bool = True
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(virtual seconds, joules) of one training round of ``head`` on ``count`` cached samples per device,
        and bytes down/up per device (``uplink=False``: a device that drops out before sending its update)."""
        c, d = head.weights.shape
        macs = device_budget(c, d, self.spec.fleet.cache_size, count, self.train_cfg).train_macs
        down = head_patch_bytes(head)
        up = c * d + 8 * c + 8 if self.spec.strategy.uplink == "int8" else float_update_bytes(c, d)
        secs = np.zeros(len(devices))
        joules = np.zeros(len(devices))
        bid = self.board_of[devices]
        t = self.train_cfg
        fixed = not (
            t.momentum or t.weight_decay or t.prox_mu
        )  # boards without an FPU train in integers then
        for i, b in enumerate(self.boards):
            sel = bid == i
            radio = down + up if uplink else down
            secs[sel] = b.compute_seconds(macs, fixed) / self.speed[devices[sel]] + b.link_seconds(
                radio, 2 if uplink else 1
            )
            joules[sel] = b.energy_j(macs, radio, fixed)
        return secs, joules, down, up

    def plan(self, r: int, head: Int8Head) -> RoundPlan:
        """Round ``r`` with ``head`` going down: availability, sample, dropouts, costs, deadline."""
        avail = self.available(r)
        sampled = self.sample(r, avail)
        count = int(self.data.cache_counts(sampled, r).max(initial=1))  # the fullest cache bounds the work
        secs, joules, down, up = self.device_costs(head, sampled, count)
        drop = self.dropped(r, sampled)
        if drop.any():  # a dropped device downloaded the head and trained, but never sends its update
            d_secs, d_joules, _, _ = self.device_costs(head, sampled[drop], count, uplink=False)
            secs[drop], joules[drop] = d_secs, d_joules
        deadline = self.spec.strategy.deadline_s
        on_time = secs <= deadline if deadline > 0 else np.ones(len(sampled), dtype=bool)
        return RoundPlan(r, avail, sampled, drop, on_time, secs, joules, down, up)

    def spend(self, plan: RoundPlan, head: Int8Head) -> tuple[int, np.ndarray]:
        """Energy and battery after the round: every sampled device computed (stragglers and dropouts too),
        the whole fleet receives ``head`` (the new one); returns its bytes and each device's joules for it."""
        f = self.spec.fleet
        redeploy = head_patch_bytes(head)
        redeploy_j = np.array([b.energy_per_radio_byte_j * redeploy for b in self.boards])[self.board_of]
        if f.battery_j > 0:
            battery = self.state.battery
            battery[plan.sampled] -= plan.joules
            battery -= redeploy_j
            self.state.battery = np.clip(battery + f.harvest_j_per_round, 0.0, f.battery_j)
        return redeploy, redeploy_j

    def log_devices(
        self,
        out_dir: Path,
        plan: RoundPlan,
        accepted: np.ndarray,
        labels: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """device_rounds/rNNNNNN.npz: one row per sampled device (``STATUS``: trained, straggler, rejected,
        dropped) with its virtual time, energy and bytes; the devices asleep in the round as a bit mask over
        all devices (``awake_bits``: bit k set = device k awake) and a count (``asleep_count``), so that a
        100,000-device fleet costs 12.5 kB per round for them. Awake devices that were not sampled are the
        rest (``idle``). With partial labels (``labels``: device ids and the given labels and pseudo-labels each
        trained on) also ``labels_used`` and ``pseudo_used``, and status ``no_labels`` for a device that had
        nothing to train on (docs/labels.md)."""
        p, n = plan, len(plan.sampled)
        status = np.where(p.on_time, STATUS.index("rejected"), STATUS.index("straggler")).astype(np.int8)
        status[np.isin(p.sampled, accepted)] = STATUS.index("trained")
        extra: dict[str, np.ndarray] = {}
        if labels is not None:
            ids, per = labels
            used = np.zeros((n, 2), dtype=np.int32)
            pos = np.searchsorted(p.sampled, ids)
            hit = (pos < n) & (p.sampled[np.minimum(pos, n - 1)] == ids)
            used[pos[hit]] = per[hit]
            extra = {"labels_used": used[:, 0], "pseudo_used": used[:, 1]}
            had = np.isin(p.sampled, ids[hit])
            status[had & (used.sum(axis=1) == 0) & p.on_time] = STATUS_LABELS.index("no_labels")
        status[p.drop] = STATUS.index("dropped")
        d = out_dir / "device_rounds"
        d.mkdir(exist_ok=True)
        np.savez(
            d / f"r{p.round:06d}.npz",
            round=np.full(n, p.round, dtype=np.int32),
            device=p.sampled.astype(np.int32),
            status=status,
            virtual_s=p.secs.astype(np.float32),
            energy_j=p.joules.astype(np.float32),
            bytes_down=np.full(n, p.down, dtype=np.int32),
            bytes_up=np.where(p.on_time & ~p.drop, p.up, 0).astype(np.int32),
            asleep_round=np.array([p.round], dtype=np.int32),
            asleep_count=np.array([int((~p.avail).sum())], dtype=np.int32),
            awake_bits=np.packbits(p.avail)[None, :],
            **extra,  # type: ignore[arg-type]  # numpy stub: **kwds
        )

    def per_gateway(self, devices: np.ndarray) -> dict[int, np.ndarray]:
        """Sorted device ids split by the gateway that serves them."""
        dpg = self.layout.devices_per_gateway
        by_gw = devices // dpg
        cuts = np.flatnonzero(np.diff(by_gw)) + 1
        return {int(chunk[0] // dpg): chunk for chunk in np.split(devices, cuts) if len(chunk)}
