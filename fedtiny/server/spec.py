"""The round engine's input: its part of the scenario, resolved once by :mod:`fedtiny.plan`."""

from __future__ import annotations

from dataclasses import dataclass

from fedtiny.config.schema import DriftEvent, EvalSection, FleetSection, StrategySection
from fedtiny.ondevice.train import TrainConfig


@dataclass(frozen=True)
class StrategySpec:
    """What builds the Flower strategy: ``[strategy]``, the devices' training (Flower's FedProx takes its
    proximal term, FedAdam & co. the learning rate), the fleet size (DP wrappers count sampled clients)."""

    strategy: StrategySection
    train: TrainConfig
    devices: int
    seed: int


@dataclass(frozen=True)
class RoundSpec:
    """Everything the round loop, the fleet model and the evaluator read."""

    seed: int
    rounds: int
    fleet: FleetSection  # availability, batteries, cache size, boards
    strategy: StrategySection
    eval: EvalSection
    drift: tuple[DriftEvent, ...]  # the drifted groups' old data (forgetting)
    train: TrainConfig
    checkpoint: bool  # save the state after every round

    @property
    def strategy_spec(self) -> StrategySpec:
        return StrategySpec(self.strategy, self.train, self.fleet.devices, self.seed)
