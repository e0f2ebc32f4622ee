"""Values derived from a scenario in one place, so simulation and field trials agree."""

from __future__ import annotations

from fedtiny.config.schema import Scenario
from fedtiny.ondevice.train import TrainConfig

#: FedProx's proximal term when the scenario picks strategy "fedprox" without setting train.prox_mu
FEDPROX_DEFAULT_MU = 0.01


def train_config(s: Scenario) -> TrainConfig:
    """The on-device training hyper-parameters every device of the scenario uses."""
    t = s.train
    fedprox = s.strategy.name == "fedprox"
    mu = (
        s.strategy.params.get("proximal_mu") if fedprox else None
    )  # Flower's FedProx argument, if the scenario sets it
    if isinstance(mu, (int, float)) and not isinstance(mu, bool):
        prox = float(mu)
    else:
        prox = t.prox_mu if t.prox_mu else (FEDPROX_DEFAULT_MU if fedprox else 0.0)
    return TrainConfig(t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, prox)
