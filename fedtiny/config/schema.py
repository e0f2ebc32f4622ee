"""The scenario schema: typed dataclasses with defaults and ranges. One file describes one experiment.

A field's ``metadata`` may give ``min``/``max`` (inclusive) or ``choices``; ``doc`` is a one-line help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, doc: str, **rules: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass
class TaskSection:
    name: str = _f("vibration", "reference task", choices=("vibration", "kws", "digits"))
    params: dict[str, Any] = _f({}, "task-specific parameters passed to the task constructor")


@dataclass
class ModelSection:
    factory_samples: int = _f(3000, "factory (central) training examples", min=50, max=1_000_000)
    test_samples: int = _f(1000, "clean factory test examples", min=10, max=1_000_000)
    epochs: int = _f(12, "central training epochs", min=1, max=1000)
    batch_size: int = _f(32, "central training batch size", min=1, max=4096)
    learning_rate: float = _f(2e-3, "central training learning rate (Adam)", min=1e-6, max=1.0)
    head_inputs: int = _f(64, "feature dimension D of the head (C x D)", min=2, max=1024)


@dataclass
class FleetSection:
    devices: int = _f(20, "simulated devices", min=1, max=1_000_000)
    devices_per_gateway: int = _f(5, "devices served by one Flower node (gateway)", min=1, max=1_000_000)
    samples_per_device: int = _f(120, "labelled examples each device collects", min=1, max=100_000)
    test_samples_per_device: int = _f(60, "local test examples per device", min=1, max=100_000)
    cache_size: int = _f(200, "int8 feature cache capacity (ring buffer) per device", min=1, max=100_000)
    dirichlet_alpha: float = _f(0.5, "label skew across devices (Dirichlet alpha; large = IID)", min=1e-3, max=1e6)
    board: str = _f("nano33ble", "board profile of every device")
    condition: dict[str, float] = _f({}, "operating condition of the fleet in the field (task drift knobs)")
    spread: dict[str, float] = _f({}, "per-device uniform +/- spread of condition knobs (heterogeneity)")


@dataclass
class TrainSection:
    epochs: int = _f(2, "local epochs per round", min=1, max=100)
    batch_size: int = _f(16, "local mini-batch size", min=1, max=4096)
    lr: float = _f(0.05, "local SGD learning rate", min=1e-6, max=10.0)
    momentum: float = _f(0.0, "local SGD momentum", min=0.0, max=0.999)
    weight_decay: float = _f(0.0, "local L2 weight decay", min=0.0, max=1.0)
    prox_mu: float = _f(0.0, "FedProx proximal term (0 = off)", min=0.0, max=100.0)


@dataclass
class StrategySection:
    name: str = _f("fedavg", "server aggregation", choices=("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean"))
    fraction: float = _f(1.0, "fraction of devices sampled per round", min=1e-6, max=1.0)
    server_lr: float = _f(1.0, "server learning rate (fedavgm, fedadam, fedyogi)", min=1e-6, max=100.0)
    server_momentum: float = _f(0.9, "server momentum (fedavgm) / beta1 (fedadam, fedyogi)", min=0.0, max=0.999)
    trim: float = _f(0.1, "fraction trimmed at each end (trimmed_mean)", min=0.0, max=0.49)
    clip_norm: float = _f(0.0, "clip each device update to this L2 norm (0 = off)", min=0.0, max=1e6)
    max_update_norm: float = _f(1e3, "reject updates whose L2 norm exceeds this", min=0.0, max=1e12)


@dataclass
class DriftEvent:
    at: int = _f(0, "round at which the event starts (0 = before the first round)", min=0, max=1_000_000)
    fraction: float = _f(1.0, "fraction of the fleet affected (chosen with the scenario seed)", min=0.0, max=1.0)
    group: str = _f("drifted", "name of the affected device group in the results")
    condition: dict[str, float] = _f({}, "task drift knobs set on the affected devices")


@dataclass
class RuntimeSection:
    engine: str = _f("simulation", "Flower runtime", choices=("simulation",))
    cpus_per_gateway: float = _f(0.5, "Ray CPUs per gateway ClientApp", min=0.01, max=64.0)
    ray_address: str = _f("", "existing Ray cluster address (empty: start a local Ray)")


@dataclass
class OutputSection:
    dir: str = _f("runs/{name}", "results directory ({name} = scenario name)")
    plots: bool = _f(True, "write PNG plots")


@dataclass
class Scenario:
    name: str = _f("scenario", "scenario name")
    seed: int = _f(0, "one seed for data, partitions, sampling, drift and training", min=0, max=2**63 - 1)
    rounds: int = _f(10, "federated rounds", min=1, max=100_000)
    task: TaskSection = field(default_factory=TaskSection)
    model: ModelSection = field(default_factory=ModelSection)
    fleet: FleetSection = field(default_factory=FleetSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    drift: list[DriftEvent] = field(default_factory=list)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    output: OutputSection = field(default_factory=OutputSection)
