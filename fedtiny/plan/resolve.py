"""A scenario resolved once into the typed, immutable inputs of each stage.

Everything a stage reads comes from here: the model stage's :class:`~fedtiny.model.build.ModelSpec`, the fleet
stage's :class:`~fedtiny.fleet.spec.FleetSpec`, the on-device :class:`~fedtiny.ondevice.train.TrainConfig`, the
round engine's :class:`~fedtiny.server.spec.RoundSpec` (with its strategy's
:class:`~fedtiny.server.spec.StrategySpec`). Below the plan no module sees the ``Scenario`` type; values derived
from several sections (FedProx's proximal term, the gateways' size) are decided here, once, so that a
simulation and a field trial agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedtiny.config.schema import Scenario
from fedtiny.fleet.layout import FleetLayout, GatewaySizing
from fedtiny.fleet.partition import local_cpus
from fedtiny.fleet.spec import FleetSpec
from fedtiny.model.build import ModelSpec
from fedtiny.ondevice.train import TrainConfig
from fedtiny.server.spec import RoundSpec, StrategySpec

#: FedProx's proximal term when the scenario picks strategy "fedprox" without setting train.prox_mu
FEDPROX_DEFAULT_MU = 0.01


def train_config(s: Scenario) -> TrainConfig:
    """The on-device training hyper-parameters every device of the scenario uses."""
    t = s.train
    fedprox = s.strategy.name == "fedprox"
    mu = s.strategy.params.get("proximal_mu") if fedprox else None  # Flower's FedProx argument, if set
    if isinstance(mu, (int, float)) and not isinstance(mu, bool):
        prox = float(mu)
    else:
        prox = t.prox_mu if t.prox_mu else (FEDPROX_DEFAULT_MU if fedprox else 0.0)
    return TrainConfig(t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, prox)


def model_spec(s: Scenario) -> ModelSpec:
    """What determines the task's reference base model (and its factory data)."""
    m = s.model
    return ModelSpec(
        task=s.task.name,
        task_params=dict(s.task.params),
        seed=s.seed,
        factory_samples=m.factory_samples,
        test_samples=m.test_samples,
        epochs=m.epochs,
        batch_size=m.batch_size,
        learning_rate=m.learning_rate,
        head_inputs=m.head_inputs,
    )


def gateway_sizing(s: Scenario) -> GatewaySizing:
    """``fleet.devices_per_gateway``, or when it is 0 the automatic size (fedtiny/fleet/partition.py) from the
    fleet size and this machine's CPUs (``runtime.cpus_per_gateway`` each: the gateways the local Ray runs at
    once); the inline engine runs one gateway at a time."""
    inline = s.runtime.engine == "inline"
    return GatewaySizing(
        s.fleet.devices_per_gateway,
        1.0 if inline else local_cpus(),
        1.0 if inline else s.runtime.cpus_per_gateway,
    )


def fleet_spec(s: Scenario) -> FleetSpec:
    return FleetSpec(
        seed=s.seed,
        rounds=s.rounds,
        fleet=s.fleet,
        drift=tuple(s.drift),
        eval=s.eval,
        sizing=gateway_sizing(s),
        model=model_spec(s),
        data=s.data,
        labels=s.labels,
    )


def layout_of(s: Scenario) -> FleetLayout:
    return fleet_spec(s).layout


def strategy_spec(s: Scenario) -> StrategySpec:
    return StrategySpec(s.strategy, train_config(s), s.fleet.devices, s.seed)


def round_spec(s: Scenario) -> RoundSpec:
    return RoundSpec(
        seed=s.seed,
        rounds=s.rounds,
        fleet=s.fleet,
        strategy=s.strategy,
        eval=s.eval,
        drift=tuple(s.drift),
        train=train_config(s),
        checkpoint=s.runtime.checkpoint,
    )


@dataclass(frozen=True)
class StageInputs:
    """The typed plan: each stage's input, built once from one scenario."""

    model: ModelSpec
    fleet: FleetSpec
    rounds: RoundSpec


def resolve(s: Scenario) -> StageInputs:
    return StageInputs(model_spec(s), fleet_spec(s), round_spec(s))
