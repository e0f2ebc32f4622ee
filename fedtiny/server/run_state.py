"""The typed state of a federated run: everything that changes from round to round and that a checkpoint
(fedtiny/server/checkpoint.py) writes so that a resumed run ends exactly like an uninterrupted one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedtiny.ondevice import Int8Head
from fedtiny.results import RoundRow

#: method -> group -> one value per round (accuracy curves, their intervals and standard errors)
Curves = dict[str, dict[str, list[float]]]


@dataclass
class FleetState:
    """What the fleet model carries across rounds: every device's battery charge in joules (float64 [K])."""

    battery: np.ndarray


@dataclass
class EvalState:
    """What the evaluator carries across rounds: the comparison subset's local-only heads (``loc_*``), the
    last accepted update of each subset device (``per_*``, ``per_has``: it has one) for personalization,
    all float32 [S, C, D] / [S, C], and the curves."""

    loc_w: np.ndarray
    loc_b: np.ndarray
    per_w: np.ndarray
    per_b: np.ndarray
    per_has: np.ndarray
    curves: Curves = field(default_factory=dict)


@dataclass
class RunState:
    """The run after round ``round``: the deployed int8 head, the fleet's and the evaluator's state, the rows
    so far, rejection counts, and the Flower strategy's state (``DeviceStrategy.state()``: server momentum,
    optimizer moments, adaptive clipping norms)."""

    round: int
    head: Int8Head
    fleet: FleetState
    evaluation: EvalState
    rows: list[RoundRow]
    rejected_total: int
    rejected_reasons: dict[str, int]
    strategy: dict[str, np.ndarray]
