"""The TOML fedtiny writes (the resolved scenario, the `fedtiny keys` defaults) reads back as the same values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedtiny.config import scenario_to_toml
from fedtiny.plan import load_scenario, scenario_from_dict
from fedtiny.plan.keys import _toml

ROOT = Path(__file__).resolve().parents[1]
AWKWARD = ['say "hi"', "back\\slash", "two\nlines", "tab\tand\rreturn", "grüße, 東京, ☃", "", "'single'"]


@pytest.mark.parametrize("text", AWKWARD)
def test_resolved_scenario_round_trips_awkward_strings(text: str) -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.toml")
    s.name = text
    s.model.classes = [text, "plain"]
    s.data.front_end_params = {"note": text, "odd key": [text], "nested": {text: 1.5}} if text else {}
    for e in s.drift:
        e.group = text or "g"
    data = tomllib.loads(scenario_to_toml(s))
    assert data["name"] == text and data["model"]["classes"] == [text, "plain"]
    assert scenario_from_dict(data) == s


def test_resolved_scenario_keeps_the_schema_order() -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.toml")
    data = tomllib.loads(scenario_to_toml(s))
    assert list(data)[:3] == ["name", "seed", "rounds"]
    tables = [k for k, v in data.items() if isinstance(v, dict)]
    assert tables == [
        "task",
        "model",
        "data",
        "fleet",
        "labels",
        "train",
        "strategy",
        "eval",
        "runtime",
        "output",
    ]


@pytest.mark.parametrize(
    "value",
    [*AWKWARD, 0, -3, 2.5e-3, 1e12, True, False, [], {}, ['a"b', "c\\d"], {"k": 'v"', "odd key": 1.5}],
)
def test_keys_defaults_are_one_line_of_toml(value: object) -> None:
    text = _toml(value)
    assert "\n" not in text
    assert tomllib.loads(f"v = {text}")["v"] == value


def test_task_errors_name_the_key_at_fault() -> None:
    from fedtiny.errors import ScenarioError

    with pytest.raises(ScenarioError, match="'task.name': unknown task 'nope'"):
        scenario_from_dict({"task": {"name": "nope", "params": {"x": 1}}})
    with pytest.raises(ScenarioError, match="'task.name': task 'no_such_module:T'"):
        scenario_from_dict({"task": {"name": "no_such_module:T"}})
    with pytest.raises(ScenarioError, match="'task.params': unknown parameter 'bogus'"):
        scenario_from_dict({"task": {"name": "vibration", "params": {"bogus": 1}}})
