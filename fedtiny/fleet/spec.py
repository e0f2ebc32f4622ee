"""The fleet stage's input: its part of the scenario, resolved once by :mod:`fedtiny.plan`.

The fleet stage (generated pools, a user's recordings, the synthetic featurizer) reads only this: the seed,
the fleet and drift sections, the local test sizes, the layout (gateways, drift segments, groups) with its
automatic sizes already decided, and where generated data comes from (the task and the factory data sizes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from fedtiny.config.schema import DataSection, DriftEvent, EvalSection, FleetSection, LabelsSection
from fedtiny.fleet.layout import FleetLayout, GatewaySizing, make_layout
from fedtiny.tasks import Task, get_task

if TYPE_CHECKING:  # the model package's runners are not needed where a spec is only read (Ray workers)
    from fedtiny.model.build import ModelSpec


@dataclass(frozen=True)
class FleetSpec:
    seed: int
    rounds: int
    fleet: FleetSection
    drift: tuple[DriftEvent, ...]
    eval: EvalSection
    sizing: GatewaySizing
    model: ModelSpec  # generated data: the task, and the factory data of the base model (test, calibration)
    data: DataSection  # recorded data: where and how to read it
    labels: LabelsSection = dataclasses.field(default_factory=LabelsSection)  # the labels devices get

    @cached_property
    def task(self) -> Task:
        """The task that generates the fleet's data (built once per spec)."""
        return get_task(self.model.task, **self.model.task_params)

    @property
    def layout(self) -> FleetLayout:
        return make_layout(self.fleet.devices, self.drift, self.sizing)

    def with_devices(self, k: int) -> FleetSpec:
        """The spec once recorded data has said how many devices it holds: a configured gateway size no larger
        than the fleet, comparison subsets no larger than the fleet."""
        dpg = min(self.fleet.devices_per_gateway, k)
        return dataclasses.replace(
            self,
            fleet=dataclasses.replace(self.fleet, devices=k, devices_per_gateway=dpg),
            eval=dataclasses.replace(self.eval, baseline_devices=min(self.eval.baseline_devices, k)),
            sizing=dataclasses.replace(self.sizing, configured=dpg),
        )
