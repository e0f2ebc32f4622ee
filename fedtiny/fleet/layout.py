"""Which devices exist, which gateway serves them, and which drift segment a round belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedtiny.config.schema import DriftEvent
from fedtiny.fleet.partition import auto_devices_per_gateway


@dataclass(frozen=True)
class FleetLayout:
    """Which devices exist, which gateway serves them, and which segment a round belongs to."""

    devices: int
    devices_per_gateway: int
    segment_starts: list[int]  # round at which each segment starts (segment 0 starts at round 0)
    groups: list[str]  # group names; device_group[k] indexes it

    @property
    def gateways(self) -> int:
        return -(-self.devices // self.devices_per_gateway)

    def segment_of_round(self, r: int) -> int:
        """Round r (1-based training rounds; 0 = initial evaluation) uses the data of this segment."""
        return max(i for i, start in enumerate(self.segment_starts) if start <= r)


@dataclass(frozen=True)
class GatewaySizing:
    """How many devices a gateway serves: ``configured`` (``fleet.devices_per_gateway``) or, when it is 0, the
    automatic size from the fleet size and the CPUs that run gateways at once (fedtiny/fleet/partition.py)."""

    configured: int
    cpus: float = 1.0
    cpus_per_gateway: float = 1.0

    def for_devices(self, devices: int) -> int:
        if self.configured > 0:
            return self.configured
        return auto_devices_per_gateway(devices, self.cpus, self.cpus_per_gateway)


def make_layout(devices: int, drift: Sequence[DriftEvent], sizing: GatewaySizing) -> FleetLayout:
    """The layout of ``devices`` devices: segments start at round 0 and at every drift event; groups are
    "fleet" and every named drift group, in order of first mention."""
    starts = sorted({0, *(e.at for e in drift)})
    groups = ["fleet"] + [e.group for e in drift if e.group != "fleet"]
    return FleetLayout(devices, sizing.for_devices(devices), starts, list(dict.fromkeys(groups)))
