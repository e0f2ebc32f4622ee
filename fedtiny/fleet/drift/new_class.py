"""``kind = "new_class"``: classes the event's devices never saw before ``at`` appear in their data (each at
least at the share of a uniform mix)."""

from __future__ import annotations

import numpy as np

from fedtiny.config.schema import DriftEvent
from fedtiny.errors import ScenarioError
from fedtiny.fleet.drift.base import Hit, Segment


class NewClass:
    options = {"classes": "take classes"}
    on_recorded_data = False  # recordings bring their new classes by themselves
    replayable = False

    def validate(self, event: DriftEvent, index: int, src: str, num_classes: int) -> None:
        for c in event.classes:
            if not 0 <= c < num_classes:
                raise ScenarioError(
                    f"{src}: 'drift[{index}].classes' has {c}; expected class indices 0..{num_classes - 1}"
                )
        if not event.classes:
            raise ScenarioError(
                f"{src}: 'drift[{index}].classes' is empty; a new_class event needs the class indices that appear"
            )

    def before(self, hit: Hit, start: Segment) -> None:
        if hit.event.at > 0:  # absent from the devices before the event
            for cl in hit.event.classes:
                start.present[hit.devices, cl] = False

    def apply(self, hit: Hit, seg: Segment) -> None:
        devices = hit.devices
        for cl in hit.event.classes:
            seg.present[devices, cl] = True
            seg.mix[devices, cl] = np.maximum(seg.mix[devices, cl], 1.0 / hit.num_classes)

    def describe(self, event: DriftEvent) -> str:
        return f"classes {', '.join(map(str, event.classes))} appear"
