"""Scenario files: typed schema, validation, overrides."""

from fedtiny.config.loader import load_scenario, parse_override, scenario_from_dict, scenario_to_toml
from fedtiny.config.schema import DriftEvent, Scenario

__all__ = [
    "DriftEvent",
    "Scenario",
    "load_scenario",
    "parse_override",
    "scenario_from_dict",
    "scenario_to_toml",
]
