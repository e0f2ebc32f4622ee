"""Load a scenario: parse it into the typed schema (:mod:`fedtiny.config.loader`) and validate it against the
stages' registries (:mod:`fedtiny.plan.validate`), in one call."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedtiny.config.loader import parse_scenario_dict, parse_scenario_file
from fedtiny.config.schema import Scenario
from fedtiny.plan.validate import validate


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file; raises ScenarioError with one readable line."""
    return parse_scenario_file(path, overrides, check=validate)


def scenario_from_dict(
    data: Mapping[str, object],
    src: str = "<scenario>",
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> Scenario:
    """The validated scenario of a TOML table (as :func:`load_scenario` reads from a file)."""
    return parse_scenario_dict(data, src, overrides, base_dir, check=validate)
