"""What a drift kind is: the :class:`DriftKind` protocol, and the state its events change.

A kind is one module of this package defining one class that satisfies :class:`DriftKind`, and one line in
the registry (:data:`fedtiny.fleet.drift.DRIFT_KINDS`). The plan's validation, the fleet plan
(:func:`fedtiny.fleet.data.build_plan`), field-trial replay and the report ask the registry, never the kind's
name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedtiny.config.schema import DriftEvent
from fedtiny.errors import ScenarioError

#: the keys of a drift event every kind takes (the others belong to kinds: ``DriftKind.options``)
COMMON_KEYS = ("at", "fraction", "group", "target", "kind")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DriftEvent)}
_FACTORIES = {f.name: f.default_factory for f in dataclasses.fields(DriftEvent)}


def default_of(key: str) -> object:
    """The schema's default of a drift event's key."""
    factory = _FACTORIES[key]
    return factory() if factory is not dataclasses.MISSING else _DEFAULTS[key]


@dataclass
class Hit:
    """One event on the fleet: the event, its place in the scenario's drift list and the devices it hits."""

    event: DriftEvent
    index: int
    devices: np.ndarray  # sorted device indices
    seed: int  # the scenario seed
    num_classes: int
    state: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # the arrays a kind computes once per event for apply


@dataclass
class Segment:
    """Every device's data in one drift segment, changed in place by the events in effect in it."""

    conditions: list[dict[str, float]]  # the distinct conditions so far (pool index): read only
    intern: Callable[[dict[str, float]], int]  # the pool index of a condition (added when new)
    variant: np.ndarray  # int32 [K]: condition of each device
    mix: np.ndarray  # float64 [K, C]: class mix of each device (before ``present`` masks it)
    present: np.ndarray  # bool [K, C]: the classes each device sees


class DriftKind(Protocol):
    """One kind of drift event (``[[drift]] kind = "..."``)."""

    @property
    def options(self) -> Mapping[str, str]:
        """The event keys this kind takes beyond :data:`COMMON_KEYS`, each with what it does in a refusal
        ("only <kind> events <what>"), e.g. ``{"alpha": "take alpha"}``."""
        ...

    @property
    def on_recorded_data(self) -> bool:
        """It may run on a user's recordings (``data.path``)."""
        ...

    @property
    def replayable(self) -> bool:
        """Field-trial replay (fedtiny.field.replay) can record it for virtual boards."""
        ...

    def validate(self, event: DriftEvent, index: int, src: str, num_classes: int) -> None:
        """Refuse what this kind cannot do with ``event`` (drift[``index``]): one ScenarioError line naming
        ``drift[index].key``. The loader has checked types and ranges, the registry the other kinds' keys."""
        ...

    def before(self, hit: Hit, start: Segment) -> None:
        """The fleet before any event (the state every segment starts from; called for every event first)."""
        ...

    def apply(self, hit: Hit, seg: Segment) -> None:
        """The event is in effect in segment ``seg`` (events apply in the scenario's order)."""
        ...

    def describe(self, event: DriftEvent) -> str:
        """A short description for people ("a new class mix"; "" when there is nothing to add)."""
        ...


def refuse_foreign_options(event: DriftEvent, index: int, src: str, kinds: Mapping[str, DriftKind]) -> None:
    """A key of another kind set on ``event`` (not its default) means nothing: refused, naming the kind
    that takes it."""
    own = kinds[event.kind].options
    for name, kind in kinds.items():
        for key, what in kind.options.items():
            if key not in own and getattr(event, key) != default_of(key):
                raise ScenarioError(
                    f"{src}: 'drift[{index}].{key}' means nothing for kind = {event.kind!r} (only {name} events "
                    f'{what}); put it in its own kind = "{name}" event'
                )
