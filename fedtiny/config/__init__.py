"""The scenario's typed schema (dataclasses), its TOML parsing and writing.

Loading a scenario for use also validates it against the stages' registries: :func:`fedtiny.plan.load_scenario`.
"""

from fedtiny.config.loader import parse_override, parse_scenario_dict, parse_scenario_file, scenario_to_toml
from fedtiny.config.schema import DriftEvent, Scenario

__all__ = [
    "DriftEvent",
    "Scenario",
    "parse_override",
    "parse_scenario_dict",
    "parse_scenario_file",
    "scenario_to_toml",
]
