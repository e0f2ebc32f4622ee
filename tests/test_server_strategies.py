"""Flower's strategies with devices as their clients (fedtiny/server/strategy.py), run on a tiny in-process fleet.

The fleet is quickstart-like: the devices work in a condition the factory head was not fitted for (brighter
digits), so the initial int8 head is poor (about 0.2) and federated last-layer training wins accuracy back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtiny.clients.simulated.gateway import handle
from fedtiny.config.schema import STRATEGY_NAMES, Scenario
from fedtiny.errors import ScenarioError
from fedtiny.fleet.data import FleetLayout
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.ondevice import FloatHead, Int8Head
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, round_spec, strategy_spec
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.strategy import ALIASES, FLOWER_STRATEGIES, DeviceStrategy
from fedtiny.server.transports import InlineTransport

logging.getLogger("flwr").setLevel(logging.WARNING)

#: constructor arguments a strategy cannot do without (the DP wrappers' noise and clipping)
NEEDS = {
    "differentialprivacyserversidefixedclipping": {"noise_multiplier": 0.1, "clipping_norm": 5.0},
    "differentialprivacyclientsidefixedclipping": {"noise_multiplier": 0.1, "clipping_norm": 5.0},
    "differentialprivacyserversideadaptiveclipping": {"noise_multiplier": 0.1},
    "differentialprivacyclientsideadaptiveclipping": {"noise_multiplier": 0.1},
    "dpfedavgfixed": {"noise_multiplier": 0.1, "clipping_norm": 5.0},
    "dpfedavgadaptive": {"noise_multiplier": 0.1},
}


def scenario(
    name: str = "fedavg", params: dict[str, Any] | None = None, rounds: int = 5, **over: dict[str, Any]
) -> Scenario:
    d: dict[str, Any] = {
        "name": "strategies",
        "seed": 7,
        "rounds": rounds,
        "task": {"name": "digits"},
        "model": {"test_samples": 60, "factory_samples": 100},
        "fleet": {
            "devices": 20,
            "devices_per_gateway": 5,
            "samples_per_device": 60,
            "test_samples_per_device": 20,
            "cache_size": 64,
            "new_samples_per_round": 8,
            "pool_per_class": 16,
            "variants": 2,
            "condition": {"brightness": 0.3},
            "spread": {"rotation_deg": 4.0},
        },
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.1},
        "strategy": {"name": name, "fraction": 1.0, "params": params or {}},
        "eval": {"baseline_devices": 8, "baselines": False, "test_mix": "balanced"},
        "runtime": {"engine": "inline"},
    }
    for k, v in over.items():
        d[k] = {**d[k], **v}
    return scenario_from_dict(d)


Fleet = tuple[Path, FleetLayout, Int8Head]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    out = tmp_path_factory.mktemp("fleet")
    layout, head = prepare_synthetic(fleet_spec(scenario()), out)
    return out / "fleet", layout, head


@pytest.fixture(scope="module")
def faulty_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    out = tmp_path_factory.mktemp("faulty")
    layout, head = prepare_synthetic(
        fleet_spec(scenario(fleet={"faulty_fraction": 0.2, "fault": "sign_flip"})), out
    )
    return out / "fleet", layout, head


def run(
    s: Scenario, fl: Fleet, out: Path | None = None, stop_after: int = 0, resume: bool = False
) -> FleetServer:
    fleet_dir, layout, head = fl
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    srv = FleetServer(round_spec(s), layout, fleet_dir, head, out_dir=out, stop_after=stop_after)
    if resume:
        assert srv.load_checkpoint()
    srv.run(InlineTransport(handle))
    return srv


def _old_fedavg(
    gw: np.ndarray, gb: np.ndarray, w: np.ndarray, b: np.ndarray, n: np.ndarray, clip_norm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The hand-written FedAvg that fedtiny.server.aggregate.Aggregator computed before Flower's strategies."""

    def flat(w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([w.reshape(w.shape[0], -1), b], axis=1).astype(np.float64)

    g = flat(gw[None], gb[None])[0]
    deltas = flat(w, b) - g
    if clip_norm > 0:
        norms = np.linalg.norm(deltas, axis=1, keepdims=True)
        deltas = deltas * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))
    weights = n.astype(np.float64) / max(float(n.sum()), 1.0)
    new = g + weights @ deltas
    c, d = gw.shape
    return new[: c * d].reshape(c, d).astype(np.float32), new[c * d :].astype(np.float32)


@pytest.mark.parametrize("per_device", [False, True])
@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_fedavg_equals_the_old_aggregator(per_device: bool, clip_norm: float) -> None:
    """Flower's FedAvg through fedtiny (pre-reduced to one reply, or one reply per device) gives the old rows:
    the heads agree to 1e-6 (measured: 0.0, bit for bit; both sum in float64)."""
    rng = np.random.default_rng(3)
    s = scenario(strategy={"clip_norm": clip_norm})
    ds = DeviceStrategy.from_spec(strategy_spec(s))
    assert not ds.per_device  # FedAvg is pre-reduced by default
    ds.per_device = per_device
    for r, k in enumerate((1, 7, 200), start=1):
        gw, gb = rng.normal(size=(10, 64)).astype(np.float32), rng.normal(size=10).astype(np.float32)
        w = (gw + 0.1 * rng.normal(size=(k, 10, 64))).astype(np.float32)
        b = (gb + 0.1 * rng.normal(size=(k, 10))).astype(np.float32)
        n = rng.integers(1, 60, k)
        new = ds.aggregate(r, FloatHead(gw, gb), w, b, n, np.arange(k), rng.random(k))
        assert new is not None
        ow, ob = _old_fedavg(gw, gb, w, b, n, clip_norm)
        np.testing.assert_allclose(new.weights, ow, rtol=0, atol=1e-6)
        np.testing.assert_allclose(new.bias, ob, rtol=0, atol=1e-6)


def test_compiled_validation_and_weighted_mean_match_numpy() -> None:
    """update_stats (one compiled pass: finite, squared norm) and weighted_delta (float64 sum in fixed chunks)
    agree with plain numpy to float64 rounding, flag NaN/Inf, and do not depend on the thread count."""
    import numba

    from fedtiny.server.aggregate import update_stats, validate_updates, weighted_delta

    rng = np.random.default_rng(11)
    k = 301
    gw, gb = rng.normal(size=(10, 64)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    w = (gw + rng.normal(size=(k, 10, 64))).astype(np.float32)
    b = (gb + rng.normal(size=(k, 10))).astype(np.float32)
    w[3, 2, 5], b[4, 1], w[5, 0, 0] = np.nan, np.inf, -np.inf
    finite, sq = update_stats(w, b, gw, gb)
    assert np.flatnonzero(~finite).tolist() == [3, 4, 5]
    dw = (w - gw).reshape(k, -1).astype(np.float64)
    ref = (dw**2).sum(axis=1) + ((b - gb).astype(np.float64) ** 2).sum(axis=1)
    np.testing.assert_allclose(sq[finite], ref[finite], rtol=1e-12)
    val = validate_updates(w, b, gw, gb, float(np.sqrt(np.median(ref[finite]))))
    assert val.reasons == {
        "non_finite": 3,
        "norm_too_large": int((np.sqrt(ref[finite]) > np.sqrt(np.median(ref[finite]))).sum()),
    }
    ok = finite
    f = rng.random(int(ok.sum()))
    mw, mb = weighted_delta(w[ok], b[ok], gw.astype(np.float64), gb.astype(np.float64), f)
    dw64 = w.reshape(k, -1).astype(np.float64) - gw.reshape(-1).astype(np.float64)  # as the strategy does
    np.testing.assert_allclose(mw, (f @ dw64[ok]).reshape(10, 64), rtol=0, atol=1e-10)
    np.testing.assert_allclose(mb, f @ (b[ok].astype(np.float64) - gb), rtol=0, atol=1e-10)
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = weighted_delta(w[ok], b[ok], gw.astype(np.float64), gb.astype(np.float64), f)
    finally:
        numba.set_num_threads(prev)
    assert one[0].tobytes() == mw.tobytes() and one[1].tobytes() == mb.tobytes()


def test_blocks_in_device_order_copy_only_when_needed() -> None:
    from fedtiny.server.aggregate import in_device_order

    def block(ids: list[int]) -> tuple[np.ndarray, ...]:
        a = np.array(ids, dtype=np.int64)
        return (a[:, None, None] * np.ones((1, 2, 3), np.float32), a[:, None] * 1.0, a, a + 1)

    one = block([3, 4, 9])
    assert all(x is y for x, y in zip(in_device_order([one]), one))  # a single block: no copy
    w, b, ids, n = in_device_order([block([10, 11]), block([0, 2]), block([5])])  # gateways out of order
    assert ids.tolist() == [0, 2, 5, 10, 11] and (w[:, 1, 2] == ids).all() and (n == ids + 1).all()
    w, b, ids, n = in_device_order([block([1, 7]), block([3, 4])])  # interleaved ranges: re-ordered
    assert ids.tolist() == [1, 3, 4, 7] and (b[:, 0] == ids).all()


def test_the_names_are_flowers_classes_and_the_older_names() -> None:
    assert set(STRATEGY_NAMES) == set(FLOWER_STRATEGIES) | set(ALIASES)
    assert {
        "fedavg",
        "fedavgm",
        "fedprox",
        "fedadam",
        "fedyogi",
        "median",
        "trimmed_mean",
        "fedmedian",
        "fedtrimmedavg",
        "krum",
        "multikrum",
        "bulyan",
        "fedadagrad",
        "qfedavg",
        "dpfedavgfixed",
    } <= set(STRATEGY_NAMES)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_named_strategy_runs_rounds_of_a_fleet(fleet: Fleet, name: str) -> None:
    srv = run(scenario(name, NEEDS.get(name), rounds=3), fleet)
    assert len(srv.rows) == 4 and all(r.devices_trained == 20 for r in srv.rows[1:])
    assert all(np.isfinite(r.accuracy) for r in srv.rows)
    assert srv.head is not None and not np.array_equal(srv.head.weights, srv.initial_head.weights)


@pytest.mark.parametrize("name", ["krum", "bulyan", "fedmedian", "fedadagrad", "fedavg"])
def test_accuracy_improves(fleet: Fleet, name: str) -> None:
    srv = run(scenario(name), fleet)
    first, last = srv.rows[0].accuracy, srv.rows[-1].accuracy
    assert last > first + 0.2, (name, [round(r.accuracy, 3) for r in srv.rows])  # measured: 0.20 -> 0.51-0.57


@pytest.mark.parametrize(
    ("name", "params"), [("krum", {"num_malicious_nodes": 2}), ("bulyan", {"num_malicious_nodes": 1})]
)
def test_krum_and_bulyan_keep_accuracy_with_sign_flipping_devices(
    faulty_fleet: Fleet, name: str, params: dict[str, Any]
) -> None:
    fault = {"faulty_fraction": 0.2, "fault": "sign_flip"}
    mean = run(scenario("fedavg", fleet=fault), faulty_fleet)
    robust = run(scenario(name, params, fleet=fault), faulty_fleet)
    accs = [round(r.accuracy, 3) for r in robust.rows]
    assert mean.rows[-1].accuracy < 0.15  # FedAvg is poisoned (measured 0.10)
    assert robust.rows[-1].accuracy > 0.4 and robust.rows[-1].accuracy > robust.rows[0].accuracy + 0.2, accs


def _rows(srv: FleetServer) -> str:
    return json.dumps([{k: v for k, v in dataclasses.asdict(r).items() if k != "wall_s"} for r in srv.rows])


@pytest.mark.parametrize(
    ("name", "params"), [("fedadam", {"eta": 0.05}), ("dpfedavgadaptive", {"noise_multiplier": 0.1})]
)
def test_resume_gives_exactly_the_uninterrupted_run(
    fleet: Fleet, tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    """The strategy's state (FedAdam's moments; the adaptive clipping norm, and DP noise seeded per round)
    travels through the checkpoint."""
    s = scenario(name, params, rounds=4, runtime={"checkpoint": True})
    full = run(s, fleet, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(s, fleet, tmp_path / "cut", stop_after=2)
    resumed = run(s, fleet, tmp_path / "cut", resume=True)
    assert _rows(resumed) == _rows(full)
    assert resumed.head is not None and full.head is not None
    assert np.array_equal(resumed.head.weights, full.head.weights) and np.array_equal(
        resumed.head.bias, full.head.bias
    )
    st_full, st_res = vars(full.strategy.strategy), vars(resumed.strategy.strategy)
    if name == "fedadam":
        for key in ("m_t", "v_t"):
            for k in st_full[key]:
                assert np.array_equal(st_full[key][k], st_res[key][k])
    else:
        assert st_full["clipping_norm"] == st_res["clipping_norm"]


USER_STRATEGY = '''
import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg


class HalfStep(FedAvg):
    """Moves the head a fraction of the way to the unweighted mean of the devices' heads."""

    calls: list = []

    def __init__(self, step: float = 0.5, **kw):
        super().__init__(**kw)
        self.step = step

    def configure_train(self, server_round, arrays, config, grid):
        self.current = {k: a.numpy() for k, a in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        HalfStep.calls.append(sorted(m.metadata.src_node_id for m in replies))
        out = {}
        for k, cur in self.current.items():
            mean = np.mean([m.content["arrays"][k].numpy() for m in replies], axis=0)
            out[k] = Array(np.asarray(cur + self.step * (mean - cur)))
        return ArrayRecord(out), None
'''


def test_a_users_strategy_loaded_by_module_and_class(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_strategies.py").write_text(USER_STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    s = scenario("my_strategies:HalfStep", {"step": 0.8}, rounds=3)
    srv = run(s, fleet)
    mod = sys.modules["my_strategies"]
    assert mod.HalfStep.calls == [list(range(20))] * 3  # one reply per device, its id as the node id
    assert srv.strategy.strategy.step == 0.8 and srv.strategy.per_device
    assert srv.rows[-1].accuracy > srv.rows[0].accuracy + 0.1
    with pytest.raises(
        ScenarioError,
        match=r"'strategy.params.stride' is not a parameter of HalfStep; expected one of: "
        r"step, fraction_train",
    ):
        scenario("my_strategies:HalfStep", {"stride": 0.8})


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        (
            "krum",
            {"num_malicous_nodes": 2},
            "'strategy.params.num_malicous_nodes' is not a parameter of Krum; expected one "
            "of: fraction_train, fraction_evaluate, min_train_nodes",
        ),
        ("fedbest", {}, "'strategy.name' = 'fedbest'; expected one of: fedavg, fedavgm"),
        (
            "dpfedavgfixed",
            {"clipping_norm": 1.0},
            "'strategy.params.noise_multiplier' is required by DifferentialPrivacyServerSideFixedClipping",
        ),
        (
            "fedtrimmedavg",
            {"beta": 0.7},
            "'strategy.params': FedTrimmedAvg: `beta` must be in the range [0, 0.5)",
        ),
        (
            "numpy:ndarray",
            {},
            "'strategy.name' = 'numpy:ndarray' is not a subclass of flwr.serverapp.strategy.Strategy",
        ),
        ("no_such_module_xyz:S", {}, "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_strategies_and_params_are_refused_in_one_line(
    name: str, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario(name, params)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_fedtiny_keys_fill_flower_arguments_params_wins() -> None:
    s = scenario("fedavgm", strategy={"server_lr": 0.5, "server_momentum": 0.7})
    st = DeviceStrategy.from_spec(strategy_spec(s)).strategy
    assert (st.server_learning_rate, st.server_momentum) == (0.5, 0.7)
    st = DeviceStrategy.from_spec(
        strategy_spec(scenario("fedadam", {"eta": 0.01}, strategy={"server_lr": 0.5}))
    ).strategy
    assert (st.eta, st.beta_1) == (0.01, 0.9)
    st = DeviceStrategy.from_spec(strategy_spec(scenario("fedadagrad"))).strategy
    assert st.eta == 0.1  # server_lr 0: Flower's default
    st = DeviceStrategy.from_spec(strategy_spec(scenario("trimmed_mean", strategy={"trim": 0.2}))).strategy
    assert st.beta == 0.2
    st = DeviceStrategy.from_spec(strategy_spec(scenario("qfedavg"))).strategy
    assert st.client_learning_rate == 0.1  # train.lr
    st = DeviceStrategy.from_spec(
        strategy_spec(scenario("dpfedavgfixed", {"noise_multiplier": 1.0}, strategy={"clip_norm": 2.0}))
    ).strategy
    assert (st.clipping_norm, st.num_sampled_clients) == (2.0, 20)
