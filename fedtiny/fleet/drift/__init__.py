"""The drift kinds: one module per kind, one line per kind in :data:`DRIFT_KINDS` (docs/design.md, "Adding a
drift kind"). Validation (fedtiny.plan.validate), the fleet plan (fedtiny.fleet.data.build_plan), field-trial
replay and the report look a kind up here."""

from __future__ import annotations

from collections.abc import Callable

from fedtiny.config.schema import DriftEvent
from fedtiny.errors import ScenarioError
from fedtiny.fleet.drift.base import DriftKind, Hit, Segment, refuse_foreign_options
from fedtiny.fleet.drift.condition import Condition
from fedtiny.fleet.drift.label_shift import LabelShift
from fedtiny.fleet.drift.new_class import NewClass

__all__ = [
    "DRIFT_KINDS",
    "DriftKind",
    "Hit",
    "Segment",
    "check_event",
    "check_kind",
    "drift_kind",
    "kind_names",
]

#: kind name (``[[drift]] kind = "..."``) -> the kind; the first is the schema's default
DRIFT_KINDS: dict[str, DriftKind] = {
    "condition": Condition(),
    "label_shift": LabelShift(),
    "new_class": NewClass(),
}


def drift_kind(event: DriftEvent) -> DriftKind:
    """The kind of ``event`` (a validated scenario names a registered one)."""
    return DRIFT_KINDS[event.kind]


def kind_names(where: Callable[[DriftKind], bool] | None = None) -> list[str]:
    """The registered kinds' names (those ``where`` accepts), in registry order."""
    return [name for name, kind in DRIFT_KINDS.items() if where is None or where(kind)]


def check_kind(event: DriftEvent, index: int, src: str) -> None:
    """``kind`` names a registered kind (one ScenarioError line listing them)."""
    if event.kind not in DRIFT_KINDS:
        raise ScenarioError(
            f"{src}: 'drift[{index}].kind' = {event.kind!r}; expected one of: {', '.join(DRIFT_KINDS)}"
        )


def check_event(event: DriftEvent, index: int, src: str, num_classes: int) -> None:
    """A known kind, no key of another kind, and what the kind itself checks."""
    check_kind(event, index, src)
    refuse_foreign_options(event, index, src, DRIFT_KINDS)
    DRIFT_KINDS[event.kind].validate(event, index, src, num_classes)
