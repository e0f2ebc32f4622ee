"""``kind = "label_shift"``: every device of the event gets a new class mix, drawn from a Dirichlet of
``alpha`` (seeded by the scenario seed and the event's place in the drift list)."""

from __future__ import annotations

import numpy as np

from fedtiny.config.schema import DriftEvent
from fedtiny.fleet.drift.base import Hit, Segment


class LabelShift:
    options = {"alpha": "take alpha"}
    on_recorded_data = False  # recordings change their class mix by themselves (each device's later examples)
    replayable = False

    def validate(self, event: DriftEvent, index: int, src: str, num_classes: int) -> None:
        pass  # alpha's range is the schema's

    def before(self, hit: Hit, start: Segment) -> None:
        c = hit.num_classes
        rng = np.random.default_rng([hit.seed, 0x5F1, hit.index])
        hit.state["mix"] = rng.dirichlet(np.full(c, hit.event.alpha), size=len(hit.devices))

    def apply(self, hit: Hit, seg: Segment) -> None:
        seg.mix[hit.devices] = hit.state["mix"]

    def describe(self, event: DriftEvent) -> str:
        return "a new class mix"
