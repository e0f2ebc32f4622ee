"""``kind = "condition"``: the task's drift knobs (sensor gain, offset, noise, operating condition, speaker...)
set on the devices, replacing the fleet's condition and its per-device spread for those knobs."""

from __future__ import annotations

import numpy as np

from fedtiny.config.schema import DriftEvent
from fedtiny.errors import ScenarioError
from fedtiny.fleet.drift.base import Hit, Segment


class Condition:
    options = {"condition": "set drift knobs"}
    on_recorded_data = True  # the generic knobs act on the recorded signal (fedtiny.data.knobs)
    replayable = True

    def validate(self, event: DriftEvent, index: int, src: str, num_classes: int) -> None:
        if not event.condition:  # the knobs themselves are checked against the task or the data
            raise ScenarioError(
                f"{src}: 'drift[{index}].condition' is empty; a condition event needs knobs, e.g. {{ gain = 0.5 }}"
            )

    def before(self, hit: Hit, start: Segment) -> None:
        pass

    def apply(self, hit: Hit, seg: Segment) -> None:
        var, devices = seg.variant, hit.devices
        for old in np.unique(var[devices]):
            new = seg.intern({**seg.conditions[old], **hit.event.condition})
            var[devices[var[devices] == old]] = new

    def describe(self, event: DriftEvent) -> str:
        return ", ".join(
            f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in event.condition.items()
        )
