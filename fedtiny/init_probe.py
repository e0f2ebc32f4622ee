"""``fedtiny init``'s federated probe: a short, seeded run of a small grid of Flower strategies on the user's own
model and data, to write the recipe that fits them (docs/byom.md, "What init probes").

A compact in-process round loop, not the simulation engine: the devices are the data's devices (a seeded sample
of them for large data), their training examples arrive in time order over the probe's rounds into a cache of
``fleet.cache_size``, a fraction of them trains each round with the on-device spec
(:func:`fedtiny.ondevice.fast.train_pooled`), and the server step is the run's own
(:func:`fedtiny.server.updates.aggregate_step` around :class:`fedtiny.server.strategy.DeviceStrategy`: the same
Flower strategy objects, validation and int8 re-quantization). What it leaves out: the fleet model (wake-ups,
stragglers, battery), gateways, drift. Every candidate sees the same devices, samples and rounds.

Scored on held-out examples of the devices' *training* part (a seeded fifth of each device's training
stream, never trained on); the devices' local test sets, which the run reports, are not touched. Examples
without a label (-1) take no part: the probe trains and scores labelled examples only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtiny.data import Recordings
from fedtiny.model.user import UserModel

Log = Callable[[str], Any]

#: the probe's defaults: rounds, sampled examples (featurized once) and devices at most
PROBE_ROUNDS = 10
MAX_EXAMPLES = 4000
MAX_DEVICES = 64
HELD_OUT = 0.2  # share of each device's training stream held out for scoring
TREND_WEIGHT = 0.5  # score = end + TREND_WEIGHT x the fitted rise over the probe's second half
SCORE_RULE = (
    "score = mean accuracy of the last three rounds + 0.5 x the rise a straight line fitted from the middle "
    "round on gives over that half; the best score is picked if it beats FedAvg at the probed lr by more than "
    "one std err, else that FedAvg"
)
#: server learning rates tried per strategy (FedAvgM: server_learning_rate with momentum 0.9; FedAdam and
#: FedYogi: eta with beta_1 0.9, Flower's defaults otherwise)
SERVER_LRS = {"fedavgm": (0.3, 1.0), "fedadam": (0.01, 0.03, 0.1), "fedyogi": (0.01, 0.03, 0.1)}


class FeatureBank:
    """int8 features of examples through the front end and the int8 backbone, each example computed once."""

    def __init__(self, um: UserModel, rec: Recordings, front_end: str) -> None:
        from fedtiny.config.schema import Scenario
        from fedtiny.fleet.user_data import InputMaker
        from fedtiny.model.runtime import Int8Runner

        s = Scenario()
        s.data.front_end = front_end
        self.inputs = InputMaker(s.data, s.seed, rec, um.io.input_scale, um.io.input_zero_point)
        self.runner = Int8Runner(um.tflite, "litert")
        self.n = len(rec)
        self.feats: np.ndarray | None = None
        self.have = np.zeros(self.n, dtype=bool)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        todo = np.unique(idx[~self.have[idx]])
        for a in range(0, len(todo), 256):
            part = todo[a : a + 256]
            f = self.runner.features(self.inputs(part))
            if self.feats is None:
                self.feats = np.zeros((self.n, f.shape[1]), dtype=np.int8)
            self.feats[part] = f
            self.have[part] = True
        assert self.feats is not None or not len(idx)
        return self.feats[idx] if self.feats is not None else np.zeros((0, 0), np.int8)


@dataclass(frozen=True)
class Candidate:
    """One recipe of the grid: a Flower strategy, its server learning rate (0: it has none) and the devices'."""

    name: str
    server_lr: float
    lr: float

    def label(self) -> str:
        srv = f" server_lr={self.server_lr:g}" if self.server_lr else ""
        return f"{self.name}{srv} lr={self.lr:g}"

    def set_args(self) -> str:
        """The `fedtiny run --set` arguments that select this recipe."""
        out = f"--set strategy.name={self.name}"
        if self.server_lr:
            out += f" --set strategy.server_lr={self.server_lr:g}"
        return out + f" --set train.lr={self.lr:g}"


def grid(lr: float) -> tuple[Candidate, ...]:
    """FedAvg at the probed on-device rate and twice it, then FedAvgM, FedAdam and FedYogi at that rate with
    their server learning rates (:data:`SERVER_LRS`)."""
    out = [Candidate("fedavg", 0.0, lr), Candidate("fedavg", 0.0, 2 * lr)]
    for name, lrs in SERVER_LRS.items():
        out += [Candidate(name, s, lr) for s in lrs]
    return tuple(out)


@dataclass(frozen=True)
class Tried:
    candidate: Candidate
    curve: tuple[float, ...]  # held-out accuracy after rounds 0..R (0: the shipped head)
    score: float


@dataclass(frozen=True)
class ProbeResult:
    tried: tuple[Tried, ...]
    best: Tried
    rounds: int
    devices: int  # devices the probe ran
    of_devices: int  # devices in the data
    held_out: int
    seconds: float

    @property
    def stderr(self) -> float:
        p = self.best.curve[-1]
        p = min(max(p, 0.01), 0.99) if np.isfinite(p) else 0.5
        return float(np.sqrt(p * (1 - p) / max(1, self.held_out)))

    def header(self) -> str:
        sample = (
            f"{self.devices} devices"
            if self.devices == self.of_devices
            else f"{self.devices} of {self.of_devices} devices (a seeded sample)"
        )
        return (
            f"federated probe: {self.rounds} rounds on {sample}, scored on {self.held_out} held-out examples of their "
            f"training data (std err about {100 * self.stderr:.1f} pts); {SCORE_RULE}"
        )

    def rows(self) -> list[str]:
        mid = self.rounds // 2
        head = f"{'recipe':<38} {'round 0':>8} {f'round {mid}':>9} {f'round {self.rounds}':>9} {'score':>7}"
        out = [head]
        for t in self.tried:
            mark = "  <- picked" if t is self.best else ""
            out.append(
                f"{t.candidate.label():<38} {_pct(t.curve[0]):>8} {_pct(t.curve[mid]):>9} "
                f"{_pct(t.curve[-1]):>9} {_pct(t.score):>7}{mark}"
            )
        return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%" if np.isfinite(v) else "-"


def score_of(curve: tuple[float, ...]) -> float:
    """Accuracy at the end (mean of the last three rounds) plus :data:`TREND_WEIGHT` times its trend: the
    least-squares slope over the second half of the rounds (middle round to last) times the rounds of that
    half. A curve still rising ranks above a flat one that ends level with it; a fitted slope, not two single
    rounds, so one noisy round moves it little."""
    r = len(curve) - 1
    end = float(np.mean(curve[-3:])) if r >= 3 else float(curve[-1])
    half = np.arange(r // 2, r + 1)
    if len(half) < 2:
        return end
    slope = float(np.polyfit(half.astype(np.float64), np.asarray(curve, dtype=np.float64)[half], 1)[0])
    return end + TREND_WEIGHT * slope * (r - r // 2)


def federated_probe(
    um: UserModel,
    bank: FeatureBank,
    y: np.ndarray,
    streams: Any,
    lr: float,
    seed: int,
    *,
    epochs: int = 2,
    batch_size: int = 16,
    fraction: float = 0.5,
    cache_size: int = 200,
    initial_fraction: float = 0.5,
    rounds: int = PROBE_ROUNDS,
    max_examples: int = MAX_EXAMPLES,
    max_devices: int = MAX_DEVICES,
    log: Log | None = None,
) -> ProbeResult | None:
    """Run every :func:`grid` recipe for ``rounds`` rounds; None when the data are too small to score.

    ``y``: labels in the model's output order; ``streams``: the run's split of the data
    (:func:`fedtiny.fleet.recorded.device_streams`, with the scenario's test_fraction)."""
    from fedtiny.config.schema import Scenario
    from fedtiny.model.flatbuffer import read_head, read_tail
    from fedtiny.ondevice import TrainConfig, TrainJob, dequantize_head
    from fedtiny.ondevice.fast import train_pooled
    from fedtiny.ondevice.head import predict_through
    from fedtiny.plan.resolve import strategy_spec
    from fedtiny.server.strategy import DeviceStrategy
    from fedtiny.server.updates import aggregate_step

    t0 = time.time()
    k_all = len(streams.n_train)
    # devices: all of them, or a seeded sample within the example and device budget
    order = np.random.default_rng([seed, 0x9B0]).permutation(k_all)
    picked: list[int] = []
    total = 0
    for d in order:
        if len(picked) >= max_devices or (picked and total + int(streams.n_train[d]) > max_examples):
            continue
        picked.append(int(d))
        total += int(streams.n_train[d])
    devs = np.sort(np.array(picked, dtype=np.int64))
    train_rows: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for d in devs:
        s = streams.stream[d, : streams.n_train[d]].astype(np.int64)
        s = s[np.asarray(y)[s] >= 0]  # examples without a label (-1) neither train nor score here
        m = int(HELD_OUT * len(s)) if len(s) >= 5 else 0
        out = np.zeros(len(s), dtype=bool)
        out[np.random.default_rng([seed, 0x4E1D, int(d)]).permutation(len(s))[:m]] = True
        train_rows.append(s[~out])  # still in time order
        held.append(s[out])
    held_idx = np.concatenate(held) if held else np.zeros(0, np.int64)
    if len(held_idx) < 20 or len(devs) < 2:
        return None
    all_idx = np.concatenate([*train_rows, held_idx])
    pos = {int(v): i for i, v in enumerate(all_idx)}
    pool = np.ascontiguousarray(bank(all_idx))
    labels = np.asarray(y)[all_idx].astype(np.int64)
    h_feats, h_y = pool[len(all_idx) - len(held_idx) :], labels[len(all_idx) - len(held_idx) :]
    head0, tail = read_head(um.tflite), read_tail(um.tflite)
    trains = np.concatenate(train_rows)
    calib = bank(np.sort(np.random.default_rng([seed, 0xCA1]).permutation(trains)[:300]))
    per_tensor = bool(um.io.per_tensor)
    k = len(devs)
    n_pick = max(1, round(fraction * k))
    samples = [
        np.sort(np.random.default_rng([seed, 0x5A3, r]).permutation(k)[:n_pick]) for r in range(rounds + 1)
    ]
    # the cache of device i at round r: its latest (up to cache_size) examples of those arrived so far
    rows_of = [np.array([pos[int(v)] for v in tr], dtype=np.int64) for tr in train_rows]

    def cache(i: int, r: int) -> np.ndarray:
        t = len(rows_of[i])
        n0 = max(1, int(np.floor(t * initial_fraction))) if t else 0
        have = min(t, n0 + int((t - n0) * r // rounds))
        return rows_of[i][max(0, have - cache_size) : have]

    def acc(head: Any) -> float:
        return float(np.mean(predict_through(head, tail, h_feats) == h_y))

    base = acc(head0)
    if log is not None:
        log(f"federated probe: {len(grid(lr))} recipes x {rounds} rounds on {k} devices ...")
    tried: list[Tried] = []
    for cand in grid(lr):
        s = Scenario()
        s.seed = seed
        s.strategy.name = cand.name
        s.strategy.server_lr = cand.server_lr
        s.train.lr = cand.lr
        strategy = DeviceStrategy.from_spec(strategy_spec(s))
        cfg = TrainConfig(epochs, batch_size, cand.lr, 0.0, 0.0, 0.0)
        head = head0
        curve = [base]
        for r in range(1, rounds + 1):
            who = samples[r]
            caches = [cache(int(i), r) for i in who]
            width = max(1, max(len(c) for c in caches))
            idx = np.zeros((len(who), width), dtype=np.int32)
            counts = np.array([len(c) for c in caches], dtype=np.int64)
            for j, c in enumerate(caches):
                idx[j, : len(c)] = c
            ids = devs[who]
            g = dequantize_head(head)
            res = train_pooled(
                g.weights,
                g.bias,
                pool,
                labels,
                idx,
                counts,
                TrainJob(
                    cfg,
                    input_scale=head.input_scale,
                    input_zero_point=head.input_zero_point,
                    seed=seed,
                    round_=r,
                    device_ids=ids,
                ),
            )
            keep = counts > 0
            part = {
                "weights": res.weights[keep],
                "bias": res.bias[keep],
                "device_ids": ids[keep],
                "num_examples": counts[keep],
                "loss": res.loss[keep],
            }
            step = aggregate_step(r, head, [part], strategy, s.strategy.max_update_norm, calib, per_tensor)
            head = step.head
            curve.append(acc(head))
        tried.append(Tried(cand, tuple(curve), score_of(tuple(curve))))
    return ProbeResult(
        tuple(tried), pick(tried, len(held_idx)), rounds, k, k_all, len(held_idx), time.time() - t0
    )


def pick(tried: list[Tried], held_out: int) -> Tried:
    """The highest score (ties: the first in grid order), if it beats the first recipe (FedAvg at the central
    probe's rate) by more than one standard error of a held-out accuracy; otherwise that first recipe."""
    best = max(tried, key=lambda t: t.score)
    p = min(max(best.curve[-1], 0.01), 0.99) if np.isfinite(best.curve[-1]) else 0.5
    se = float(np.sqrt(p * (1 - p) / max(1, held_out)))
    return best if best.score > tried[0].score + se else tried[0]
