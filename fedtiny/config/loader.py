"""Parse a scenario TOML into the typed schema: types, ranges and choices of every key, ``--set`` overrides,
paths. Every mistake becomes one ScenarioError line naming the file, the key and what was expected. What needs
the stages' registries (a task's knobs, a board, a strategy's parameters) is checked one layer up, by
:mod:`fedtiny.plan.validate`; :func:`fedtiny.plan.load_scenario` does both."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomli_w

from fedtiny.config.schema import Scenario
from fedtiny.errors import ScenarioError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_D = TypeVar("_D", bound="DataclassInstance")

#: validation that needs the stages' registries (tasks, front ends, boards, strategies): fedtiny.plan.validate
Check = Callable[[Scenario, str], None]

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(value: object, tp: object, where: str, src: str) -> object:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
        return {str(k): _convert(v, val_tp, f"{where}.{k}", src) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf; no key means them
        raise ScenarioError(f"{src}: '{where}' = {value!r}; expected a finite number")
    if tp is Any:  # a free-form table (e.g. a task's params): its values kept as TOML gives them
        if isinstance(value, dict):
            return {str(k): _convert(v, tp, f"{where}.{k}", src) for k, v in value.items()}
        if isinstance(value, list):
            return [_convert(v, tp, f"{where}[{i}]", src) for i, v in enumerate(value)]
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(tp, type)
        and tp in _TYPE_WORDS
        and (not isinstance(value, tp) or (tp is int and isinstance(value, bool)))
    ):
        raise ScenarioError(f"{src}: '{where}' expected {_TYPE_WORDS[tp]}, got {value!r}")
    return value


def _check_rules(value: Any, meta: Mapping[str, Any], where: str, src: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r} is above the maximum {meta['max']}")
    if "choices" in meta and value not in meta["choices"]:
        raise ScenarioError(f"{src}: '{where}' = {value!r}; expected one of: {', '.join(meta['choices'])}")


def _build(cls: type[_D], data: Mapping[str, object], prefix: str, src: str) -> _D:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'? " if close else ""
            raise ScenarioError(f"{src}: unknown key '{where}'; {hint}expected one of: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], where, src)
        _check_rules(kwargs[key], fields[key].metadata, where, src)
    return cls(**kwargs)


def _set_dotted(data: dict[str, object], dotted: str, value: object, src: str) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ScenarioError(f"{src}: cannot set '{dotted}': '{p}' is not a table")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with a TOML value (``rounds=50``, ``task.name="kws"``); a bare word is a string."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


#: keys that name files: relative paths are relative to the scenario file (to the working directory in --set)
PATH_KEYS = (("model", "tflite"), ("model", "keras"), ("data", "path"), ("data", "background"))


def _resolve_paths(data: dict[str, object], base: Path) -> None:
    for section, key in PATH_KEYS:
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
            p = Path(table[key]).expanduser()
            table[key] = str(p if p.is_absolute() else (base / p).resolve())


def parse_scenario_dict(
    data: Mapping[str, object],
    src: str = "<scenario>",
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
    check: Check | None = None,
) -> Scenario:
    """The typed scenario of a TOML table, with ``--set`` overrides; ``check`` validates what needs the stages'
    registries (:func:`fedtiny.plan.validate.validate`; :func:`fedtiny.plan.scenario_from_dict` passes it). An
    error that an override caused names it."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    _resolve_paths(data, base_dir or Path.cwd())
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value, f"{src} (--set {key})")
    _resolve_paths(data, Path.cwd())
    try:
        scenario: Scenario = _build(Scenario, data, "", src)
        _default_target_groups(scenario, data.get("drift"))
        if check is not None:
            check(scenario, src)
    except ScenarioError as exc:
        keys = [parse_override(t)[0] for t in overrides or []]
        culprit = next((k for k in keys if f"'{k}" in str(exc)), None)
        if culprit:
            raise ScenarioError(f"{exc} (from --set {culprit})") from None
        raise
    return scenario


def parse_scenario_file(
    path: str | Path, overrides: list[str] | None = None, check: Check | None = None
) -> Scenario:
    """Read and override a scenario file (``check`` as in :func:`parse_scenario_dict`); raises ScenarioError with
    one readable line."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: scenario file not found")
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{p}: not a TOML text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} "
            "is not UTF-8)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read the scenario file ({exc.strerror or exc})") from None
    data.setdefault("name", p.stem)
    return parse_scenario_dict(data, str(p), overrides, base_dir=p.resolve().parent, check=check)


def _default_target_groups(s: Scenario, raw: object) -> None:
    """A targeted event acts on the devices of its target group; its ``group`` defaults to the target."""
    for i, e in enumerate(s.drift):
        given = isinstance(raw, list) and i < len(raw) and isinstance(raw[i], dict) and "group" in raw[i]
        if e.target and not given:
            e.group = e.target


def _table(obj: DataclassInstance | type[DataclassInstance]) -> dict[str, object]:
    """A schema dataclass as a TOML table in field order; empty lists and tables (every one's default) left out."""
    table: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = _table(v)
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            v = [_table(x) for x in v]
        elif isinstance(v, list | dict) and not v:
            continue
        table[f.name] = v
    return table


def scenario_to_toml(s: Scenario) -> str:
    """The resolved scenario as TOML (saved with the results), written by tomli-w."""
    return tomli_w.dumps(_table(s))
