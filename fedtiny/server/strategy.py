"""Flower's strategies with devices as their clients.

A gateway reply carries many devices' updates; Flower's strategies (``flwr.serverapp.strategy``) expect one
reply per client with one ArrayRecord. :class:`DeviceStrategy` wraps any Flower ``Strategy`` and turns the
round's accepted device updates (already decoded from the int8 uplink, validated and clipped by fedtiny) into
one reply ``Message`` per device (ArrayRecord ``weights``/``bias``, MetricRecord ``num-examples`` and
``train_loss``), calls the strategy's ``aggregate_train`` and returns the new float head; fedtiny then
re-quantizes it to int8, the only thing that is deployed.

Strategies whose aggregate depends on the updates only through their example-weighted mean (FedAvg, FedProx,
FedAvgM, FedAdam, FedYogi, FedAdagrad: Flower's own ``aggregate_train`` of these classes) receive that mean
as one reply weighted by the total number of examples: the same result up to float summation order, without
building 100,000 Messages per round. Every other strategy (the robust ones, QFedAvg, the DP wrappers, a
user's) gets one Message per device.

Names: Flower's class names in lower case (``fedavg``, ``krum``, ``bulyan``, ``qfedavg``,
``differentialprivacyserversidefixedclipping``, ...), the older fedtiny names (``median``,
``trimmed_mean``), short DP names (``dpfedavgfixed``, ``dpfedavgadaptive``: FedAvg inside the wrapper), or
``"module:Class"`` for a user's ``Strategy`` subclass. ``[strategy.params]`` are the class's constructor
arguments; ``server_lr``, ``server_momentum``, ``trim``, ``train.lr`` and ``train.prox_mu`` fill the
matching ones that params leaves out.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import logging
import os
import pickle
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn, cast

import numpy as np

from fedtiny.ondevice import FloatHead
from fedtiny.server.aggregate import update_stats, weighted_delta
from fedtiny.server.exact import dot, install_flower_exact

if TYPE_CHECKING:
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy

    from fedtiny.server.spec import StrategySpec

#: scenario name -> Flower class name in ``flwr.serverapp.strategy``
FLOWER_STRATEGIES = {
    name.lower(): name
    for name in (
        "FedAvg",
        "FedAvgM",
        "FedProx",
        "FedAdam",
        "FedYogi",
        "FedAdagrad",
        "QFedAvg",
        "FedMedian",
        "FedTrimmedAvg",
        "Krum",
        "MultiKrum",
        "Bulyan",
        "DifferentialPrivacyServerSideFixedClipping",
        "DifferentialPrivacyClientSideFixedClipping",
        "DifferentialPrivacyServerSideAdaptiveClipping",
        "DifferentialPrivacyClientSideAdaptiveClipping",
    )
}
#: older fedtiny names and short names of the DP wrappers (FedAvg inside)
ALIASES = {
    "median": "fedmedian",
    "trimmed_mean": "fedtrimmedavg",
    "dpfedavgfixed": "differentialprivacyserversidefixedclipping",
    "dpfedavgadaptive": "differentialprivacyserversideadaptiveclipping",
}
STRATEGY_NAMES = tuple(FLOWER_STRATEGIES) + tuple(ALIASES)
#: fedtiny keys that fill a Flower constructor argument that [strategy.params] does not set
#: (server_lr 0 means: the class's own default)
_MAPPED = {
    "server_learning_rate": "server_lr",
    "eta": "server_lr",
    "server_momentum": "server_momentum",
    "beta_1": "server_momentum",
    "beta": "trim",
    "client_learning_rate": "train.lr",
    "eta_l": "train.lr",
    "proximal_mu": "train.prox_mu",
}
_PRE_REDUCED = ("FedAvg", "FedAvgM", "FedAdam", "FedYogi", "FedAdagrad")  # aggregate = f(weighted mean)
_NO_ARGS = ("strategy", "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn", "selection_rule", "accountant")


def canonical_name(name: str) -> str:
    """The Flower-class-name form of a built-in strategy name (``median`` -> ``fedmedian``)."""
    return ALIASES.get(name, name)


def strategy_class(name: str) -> type[Strategy]:
    """The Flower strategy class a scenario names; ValueError with one line if there is none."""
    from flwr.serverapp import strategy as fs

    key = canonical_name(name)
    if key in FLOWER_STRATEGIES:
        cls: type[Strategy] = getattr(fs, FLOWER_STRATEGIES[key])
        return cls
    if ":" not in name:
        raise ValueError(f'{name!r}; expected one of: {", ".join(STRATEGY_NAMES)}, or "module:Class"')
    mod_name, _, cls_name = name.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: a module next to where fedtiny runs is importable
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(mod_name), cls_name)
    except ImportError as exc:
        raise ValueError(f"{name!r}: cannot import module {mod_name!r} ({exc})") from None
    except AttributeError:
        raise ValueError(f"{name!r}: module {mod_name!r} has no {cls_name!r}") from None
    if not (inspect.isclass(obj) and issubclass(obj, fs.Strategy)):
        raise ValueError(f"{name!r} is not a subclass of flwr.serverapp.strategy.Strategy")
    if inspect.isabstract(obj):
        raise ValueError(
            f"{name!r} does not implement: {', '.join(sorted(getattr(obj, '__abstractmethods__', ())))}"
        )
    return obj


def _init_params(cls: type) -> dict[str, inspect.Parameter]:
    """Named constructor arguments of ``cls``, following ``**kwargs`` up the class hierarchy."""
    out: dict[str, inspect.Parameter] = {}
    for c in cls.__mro__:
        if "__init__" not in vars(c) or c is object:
            continue
        sig = inspect.signature(vars(c)["__init__"]).parameters
        for p, v in list(sig.items())[1:]:
            if v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                out.setdefault(p, v)
        if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in sig.values()):
            break
    return out


def _is_wrapper(cls: type) -> bool:
    return "strategy" in _init_params(cls)  # the DP wrappers take an inner strategy


def strategy_params(s: StrategySpec, cls: type) -> dict[str, object]:
    """Constructor arguments of ``cls``: [strategy.params], then the fedtiny keys that map onto the rest.

    Raises ValueError naming ``strategy.params.X`` for an argument ``cls`` does not take or a required one
    that is missing."""
    sig = _init_params(cls)
    valid = [p for p in sig if p not in _NO_ARGS]
    params = dict(s.strategy.params)
    for key in params:
        if key not in valid:
            raise ValueError(
                f"'strategy.params.{key}' is not a parameter of {cls.__name__}; expected one of: "
                f"{', '.join(valid) or '(none)'}"
            )
    t = s.train
    fedtiny = {
        "server_lr": s.strategy.server_lr,
        "server_momentum": s.strategy.server_momentum,
        "trim": s.strategy.trim,
        "train.lr": t.lr,
        "train.prox_mu": t.prox_mu,
    }
    for arg, key in _MAPPED.items():
        if arg in valid and arg not in params and not (key == "server_lr" and fedtiny[key] == 0):
            params[arg] = fedtiny[key]
    if _is_wrapper(cls):
        params.setdefault("num_sampled_clients", max(1, round(s.strategy.fraction * s.devices)))
        if "clipping_norm" in valid and s.strategy.clip_norm > 0:
            params.setdefault("clipping_norm", s.strategy.clip_norm)
    for p in valid:
        if sig[p].default is inspect.Parameter.empty and p not in params:
            raise ValueError(f"'strategy.params.{p}' is required by {cls.__name__}")
    return params


def make_strategy(s: StrategySpec) -> Strategy:
    """The scenario's Flower strategy object (a DP wrapper holds a FedAvg); ValueError with one line."""
    cls = strategy_class(s.strategy.name)
    params = strategy_params(s, cls)
    if _is_wrapper(cls):
        from flwr.serverapp.strategy import FedAvg

        params["strategy"] = FedAvg()
    try:
        with _quiet():
            return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'strategy.params': {cls.__name__}: {exc}") from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Flower's per-round INFO lines (virtual nodes sampled, replies received) only WARNING and above pass."""
    log = logging.getLogger("flwr")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _seeded(seed: int, server_round: int) -> Iterator[None]:
    """Seed the global RNGs Flower draws from (node sampling, DP noise) per round; restore them after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    ss = np.random.SeedSequence([seed, 0x57A7, server_round]).generate_state(2)
    np.random.seed(int(ss[0]))
    random.seed(int(ss[1]))
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextmanager
def _identity() -> Iterator[None]:
    """Outside a Flower run (inline engine, tests) Messages need a task identity: a placeholder, removed after."""
    from flwr.supercore.task_identity import TaskIdentity

    unset = []
    for attr in ("task_id", "run_id", "node_id"):
        try:
            getattr(TaskIdentity, attr)
        except RuntimeError:
            unset.append(attr)
            setattr(TaskIdentity, attr, 0)
    try:
        yield
    finally:
        for attr in unset:
            setattr(TaskIdentity, attr, None)


class _Nodes:
    """The Grid a strategy's ``configure_train`` sees: ``n`` virtual nodes (fedtiny samples the devices)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(
            f"fedtiny samples and reaches the devices itself; a strategy cannot use Grid.{name}"
        )


def _chain(strategy: Strategy) -> list[Strategy]:
    out = [strategy]
    while hasattr(out[-1], "strategy") and out[-1].strategy is not out[-1]:
        out.append(out[-1].strategy)
    return out


class DeviceStrategy:
    """A Flower strategy whose clients are devices: the round's accepted device updates in, a float head out.

    The strategy object lives across rounds (server optimizer state: FedAvgM momentum, FedAdam/FedYogi
    moments, adaptive clipping norms); :meth:`state` / :meth:`load_state` carry it through checkpoints."""

    def __init__(
        self, strategy: Strategy, seed: int = 0, clip_norm: float = 0.0, per_device: bool | None = None
    ) -> None:
        self.strategy = strategy
        self.seed = seed
        self.clip_norm = clip_norm
        chain = _chain(strategy)
        self.weight_key = str(
            next((x.weighted_by_key for x in chain if hasattr(x, "weighted_by_key")), "num-examples")
        )
        self.loss_key = str(
            next((x.train_loss_key for x in chain if hasattr(x, "train_loss_key")), "train_loss")
        )
        self.per_device = not self._pre_reducible() if per_device is None else per_device

    @classmethod
    def from_spec(cls, s: StrategySpec) -> DeviceStrategy:
        """The scenario's strategy (``strategy.name``, ``[strategy.params]``) around devices."""
        try:
            return cls(make_strategy(s), seed=s.seed, clip_norm=s.strategy.clip_norm)
        except ValueError as exc:
            from fedtiny.errors import ScenarioError

            raise ScenarioError(f"'strategy.name' = {s.strategy.name!r}: {exc}") from None

    def _pre_reducible(self) -> bool:
        from flwr.serverapp import strategy as fs
        from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

        agg = type(self.strategy).aggregate_train
        return any(agg is getattr(fs, c).aggregate_train for c in _PRE_REDUCED) and (
            getattr(self.strategy, "train_metrics_aggr_fn", None) is aggregate_metricrecords
        )

    def _nodes(self) -> int:
        need = [2] + [
            int(getattr(x, a))
            for x in _chain(self.strategy)
            for a in ("min_available_nodes", "min_train_nodes")
            if isinstance(getattr(x, a, None), int)
        ]
        return max(need)

    def aggregate(
        self,
        server_round: int,
        head: FloatHead,
        w: np.ndarray,
        b: np.ndarray,
        n: np.ndarray,
        device_ids: np.ndarray,
        loss: np.ndarray,
    ) -> FloatHead | None:
        """New float head from the accepted updates ``w`` [K, C, D], ``b`` [K, C] of devices ``device_ids``
        (``n`` examples, training ``loss`` each) trained from ``head``; None: the strategy kept the head."""
        gw, gb = head.weights.astype(np.float64), head.bias.astype(np.float64)
        total = float(n.sum())
        if not len(n) or total <= 0:
            return None
        clip = self._configure(server_round, gw, gb)
        has_client_clip = clip is not None
        # per-device scale of each update: fedtiny's clipping (before the strategy sees the updates), then
        # the client-side DP clipping; norms of the float64 differences (the updates are never copied to float64)
        scale = np.ones(len(n), dtype=np.float64)
        norm_bit = None
        if self.clip_norm > 0 or has_client_clip:
            _, sq = update_stats(w, b, gw, gb)
            norm = np.sqrt(sq)
            if self.clip_norm > 0:
                scale = np.minimum(1.0, self.clip_norm / np.maximum(norm, 1e-12))
                norm = norm * scale
            if clip is not None:
                f = np.minimum(1.0, clip / np.maximum(norm, 1e-12))
                scale = scale * f
                norm_bit = f < 1
        loss64 = loss.astype(np.float64)
        if self.per_device:
            dw = w.astype(np.float64) - gw  # robust strategies see every device: [K, C, D] in float64
            db = b.astype(np.float64) - gb
            dw *= scale[:, None, None]
            db *= scale[:, None]
            rows = [(gw + dw[i], gb + db[i], n[i], loss64[i], int(device_ids[i])) for i in range(len(n))]
        else:
            p = n.astype(np.float64) / total  # the example-weighted mean update: all these strategies use
            step_w, step_b = weighted_delta(w, b, gw, gb, p * scale)
            rows = [(gw + step_w, gb + step_b, total, dot(p, loss64), -1)]  # no BLAS (CPU-dependent order)
        return self._flower_aggregate(server_round, gw, gb, rows, norm_bit)

    @property
    def reducible(self) -> bool:
        """Whether the strategy reads only the example-weighted mean update, so gateways may send partial
        sums (fedtiny/server/partial.py) and :meth:`aggregate_mean` gives what :meth:`aggregate` would."""
        return not self.per_device

    def aggregate_mean(
        self,
        server_round: int,
        head: FloatHead,
        step_w: np.ndarray,
        step_b: np.ndarray,
        total: float,
        loss: float,
    ) -> FloatHead | None:
        """:meth:`aggregate` from the accepted devices' example-weighted mean update (``step_w``, ``step_b``
        float64, fedtiny's clipping applied), ``total`` examples and weighted mean ``loss``."""
        if self.per_device:
            raise ValueError(f"{type(self.strategy).__name__} needs every device's update, not their mean")
        gw, gb = head.weights.astype(np.float64), head.bias.astype(np.float64)
        if total <= 0:
            return None
        if self._configure(server_round, gw, gb) is not None:
            raise ValueError("a client-side clipping strategy needs every device's update, not their mean")
        return self._flower_aggregate(
            server_round, gw, gb, [(gw + step_w, gb + step_b, total, loss, -1)], None
        )

    def _configure(self, server_round: int, gw: np.ndarray, gb: np.ndarray) -> float | None:
        """Flower's configure_train for this round (server optimizers keep the current arrays); the clipping
        norm a client-side differential-privacy wrapper asks the devices to apply, if any."""
        from flwr.app import Array, ArrayRecord, ConfigRecord

        with _seeded(self.seed, server_round), _quiet(), _identity():
            config = ConfigRecord()
            current = ArrayRecord({"weights": Array(gw), "bias": Array(gb)})
            list(
                self.strategy.configure_train(
                    server_round, current, config, cast("Grid", _Nodes(self._nodes()))
                )
            )
        clip = config.get("clipping_norm")  # a client-side DP wrapper: the device's clipping (Flower's mods)
        if isinstance(clip, (int, float)) and not isinstance(clip, bool):
            return float(clip)
        return None

    def _flower_aggregate(
        self,
        server_round: int,
        gw: np.ndarray,
        gb: np.ndarray,
        rows: list[
            tuple[np.ndarray, np.ndarray, float, float, int]
        ],  # examples, loss: numbers or numpy scalars
        norm_bit: np.ndarray | None,
    ) -> FloatHead | None:
        """Flower's aggregate_train over one reply per row (weights, bias, examples, loss, device id)."""
        from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict

        install_flower_exact()  # Flower's BLAS distances and norms, FedAdam's np.power: exact (server/exact.py)
        replies = []
        with _identity():  # a device's reply to its train instruction: src_node_id is the device id
            for i, (rw, rb, ni, li, dev) in enumerate(rows):
                metrics: dict[str, int | float | list[int] | list[float]] = {
                    self.weight_key: int(ni) if float(ni).is_integer() else float(ni),
                    self.loss_key: float(li),
                }
                if norm_bit is not None:  # what Flower's adaptiveclipping_mod reports
                    metrics["norm_bit"] = int(norm_bit[i]) if self.per_device else int(norm_bit.mean() > 0.5)
                content = RecordDict(
                    {
                        "arrays": ArrayRecord(
                            {
                                "weights": Array(np.ascontiguousarray(rw)),
                                "bias": Array(np.ascontiguousarray(rb)),
                            }
                        ),
                        "metrics": MetricRecord(metrics),
                    }
                )
                ask = Message(
                    RecordDict(), dst_node_id=dev, message_type=MessageType.TRAIN, group_id=str(server_round)
                )
                replies.append(Message(content, reply_to=ask))
        gc.freeze()  # Flower's to_numpy_ndarrays(keep_input=False) runs gc.collect() per reply: 0.2 s each on a big heap
        try:
            with _seeded(self.seed, server_round), _quiet():
                arrays, _ = self.strategy.aggregate_train(server_round, replies)
        finally:
            gc.unfreeze()
        if arrays is None:
            return None
        nw, nb = arrays["weights"].numpy(), arrays["bias"].numpy()
        if nw.shape != gw.shape or nb.shape != gb.shape:
            raise ValueError(
                f"{type(self.strategy).__name__} returned arrays of shape {nw.shape}, {nb.shape}; "
                f"expected {gw.shape}, {gb.shape}"
            )
        return FloatHead(nw.astype(np.float32), nb.astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        """The strategy's attributes that pickle (its optimizer state among them) for checkpoints."""
        keep = {}
        for k, v in vars(self.strategy).items():
            try:
                keep[k] = pickle.dumps(v)
            except Exception:  # callables a constructor set (it sets them again on resume)
                continue
        return {"strategy_state": np.frombuffer(pickle.dumps(keep), dtype=np.uint8)}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` saved (a checkpoint of this run, written by fedtiny)."""
        if "strategy_state" not in st:
            return
        for k, v in pickle.loads(np.asarray(st["strategy_state"], dtype=np.uint8).tobytes()).items():
            setattr(self.strategy, k, pickle.loads(v))
