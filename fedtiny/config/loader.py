"""Load a scenario TOML into the typed schema. Every mistake becomes one ScenarioError line naming the
file, the key and what was expected, before any work starts."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from fedtiny.config.schema import DriftEvent, Scenario
from fedtiny.errors import ScenarioError

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(value: Any, tp: Any, where: str, src: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ScenarioError(f"{src}: '{where}' must be a table, got {value!r}")
        return _build(tp, value, where, src)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ScenarioError(f"{src}: '{where}' must be a list (e.g. [[{where}]] tables), got {value!r}")
        return [_convert(v, item, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ScenarioError(f"{src}: '{where}' must be a table, got {value!r}")
        return {str(k): (v if val_tp is Any else _convert(v, val_tp, f"{where}.{k}", src)) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in _TYPE_WORDS and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ScenarioError(f"{src}: '{where}' expected {_TYPE_WORDS[tp]}, got {value!r}")
    return value


def _check_rules(value: Any, meta: Any, where: str, src: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r} is above the maximum {meta['max']}")
    if "choices" in meta and value not in meta["choices"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r}; expected one of: {', '.join(meta['choices'])}")


def _build(cls: Any, data: dict[str, Any], prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ScenarioError(f"{src}: unknown key '{where}'; expected one of: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], where, src)
        _check_rules(kwargs[key], fields[key].metadata, where, src)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, src: str) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"{src}: cannot set '{dotted}': '{p}' is not a table")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``rounds=50``, ``task.name="kws"``); a bare word is a string."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def scenario_from_dict(data: dict[str, Any], src: str = "<scenario>", overrides: list[str] | None = None) -> Scenario:
    data = dict(data)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value, f"{src} (--set {key})")
    try:
        scenario: Scenario = _build(Scenario, data, "", src)
        _check_semantics(scenario, src)
    except ScenarioError as exc:
        keys = [parse_override(t)[0] for t in overrides or []]
        culprit = next((k for k in keys if f"'{k}" in str(exc)), None)
        if culprit:
            raise ScenarioError(f"{exc} (from --set {culprit})") from None
        raise
    return scenario


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, validate and override a scenario file; raises ScenarioError with one readable line."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: scenario file not found")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    data.setdefault("name", p.stem)
    return scenario_from_dict(data, str(p), overrides)


def _check_semantics(s: Scenario, src: str) -> None:
    from fedtiny.tasks import get_task  # numpy only; validates task params and drift knobs

    from fedtiny.errors import FedTinyError

    try:
        task = get_task(s.task.name, **s.task.params)
    except (FedTinyError, TypeError) as exc:
        key = "task.params" if "parameter" in str(exc) or isinstance(exc, TypeError) else "task.name"
        raise ScenarioError(f"{src}: '{key}': {exc}") from None
    knobs = set(task.drift_knobs)
    for where, cond in [("fleet.condition", s.fleet.condition), ("fleet.spread", s.fleet.spread)] + [
        (f"drift[{i}].condition", e.condition) for i, e in enumerate(s.drift)
    ]:
        for k in cond:
            if k not in knobs:
                raise ScenarioError(f"{src}: '{where}.{k}' is not a drift knob of task '{task.name}'; expected one of: {', '.join(sorted(knobs))}")
    for i, e in enumerate(s.drift):
        if e.at > s.rounds:
            raise ScenarioError(f"{src}: 'drift[{i}].at' = {e.at} is after the last round ({s.rounds})")
    from fedtiny.fleet.boards import get_board

    try:
        get_board(s.fleet.board)
    except Exception as exc:
        raise ScenarioError(f"{src}: 'fleet.board': {exc}") from None
    for name, frac in s.fleet.boards.items():
        try:
            get_board(name)
        except Exception as exc:
            raise ScenarioError(f"{src}: 'fleet.boards.{name}': {exc}") from None
        if not 0.0 <= frac <= 1.0:
            raise ScenarioError(f"{src}: 'fleet.boards.{name}' = {frac!r}; expected a fraction between 0 and 1")
    if s.fleet.boards and abs(sum(s.fleet.boards.values()) - 1.0) > 1e-6:
        raise ScenarioError(f"{src}: 'fleet.boards' fractions sum to {sum(s.fleet.boards.values()):.4g}; expected 1")
    groups = {"fleet"}
    for i, e in enumerate(s.drift):
        if e.target and e.target not in groups:
            raise ScenarioError(f"{src}: 'drift[{i}].target' = {e.target!r} is not a group of an earlier event; expected one of: {', '.join(sorted(groups))}")
        for c in e.classes:
            if not 0 <= c < task.num_classes:
                raise ScenarioError(f"{src}: 'drift[{i}].classes' has {c}; expected class indices 0..{task.num_classes - 1}")
        if e.kind == "new_class" and not e.classes:
            raise ScenarioError(f"{src}: 'drift[{i}].classes' is empty; a new_class event needs the class indices that appear")
        if e.kind == "condition" and not e.condition:
            raise ScenarioError(f"{src}: 'drift[{i}].condition' is empty; a condition event needs knobs, e.g. {{ gain = 0.5 }}")
        groups.add(e.group)


def scenario_to_toml(s: Scenario) -> str:
    """The resolved scenario as TOML (saved with the results)."""
    lines: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    def section(obj: Any, header: str) -> None:
        scalars = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        if header:
            lines.append(f"\n{header}")
        for k, v in scalars:
            if not dataclasses.is_dataclass(v) and not (isinstance(v, list) and v and isinstance(v[0], DriftEvent)):
                if not (isinstance(v, list) and not v):
                    lines.append(f"{k} = {val(v)}")

    section(s, "")
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if dataclasses.is_dataclass(v):
            section(v, f"[{f.name}]")
    for e in s.drift:
        section(e, "[[drift]]")
    return "\n".join(lines).lstrip() + "\n"
