"""Load a scenario TOML into the typed schema. Every mistake becomes one ScenarioError line naming the
file, the key and what was expected, before any work starts."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

import tomli_w

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
        return {str(k): _convert(v, val_tp, f"{where}.{k}", src) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf; no key means them
        raise ScenarioError(f"{src}: '{where}' = {value!r}; expected a finite number")
    if tp is Any:
        if isinstance(value, dict):
            return {str(k): _convert(v, Any, f"{where}.{k}", src) for k, v in value.items()}
        if isinstance(value, list):
            return [_convert(v, Any, f"{where}[{i}]", src) for i, v in enumerate(value)]
        return value
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


#: keys that name files: relative paths are relative to the scenario file (to the working directory in --set)
PATH_KEYS = (("model", "tflite"), ("model", "keras"), ("data", "path"), ("data", "background"))


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in PATH_KEYS:
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
            p = Path(table[key]).expanduser()
            table[key] = str(p if p.is_absolute() else (base / p).resolve())


def scenario_from_dict(
    data: dict[str, Any],
    src: str = "<scenario>",
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
) -> Scenario:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    _resolve_paths(data, base_dir or Path.cwd())
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value, f"{src} (--set {key})")
    _resolve_paths(data, Path.cwd())
    try:
        scenario: Scenario = _build(Scenario, data, "", src)
        _default_target_groups(scenario, data.get("drift"))
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
    return scenario_from_dict(data, str(p), overrides, base_dir=p.resolve().parent)


def _check_user_files(s: Scenario, src: str) -> None:
    """A user's model and data: the files exist and the options fit (their contents are checked when read)."""
    if s.model.tflite and s.model.keras:
        raise ScenarioError(f"{src}: 'model.tflite' and 'model.keras' are both set; give one model")
    for section, key in PATH_KEYS:
        value = getattr(getattr(s, section), key)
        if value and not Path(value).exists():
            raise ScenarioError(f"{src}: '{section}.{key}' = {value!r}: file or folder not found")
    if s.data.path and not (s.model.tflite or s.model.keras):
        raise ScenarioError(
            f"{src}: 'data.path' is set but no model: give [model] tflite = \"model.tflite\" (or keras = ...); "
            "fedtiny's reference models are trained on their own tasks' data"
        )
    fe = s.data.front_end
    from fedtiny.data.frontends import FRONT_ENDS

    if fe not in FRONT_ENDS and ":" not in fe:
        raise ScenarioError(
            f"{src}: 'data.front_end' = {fe!r}; expected one of: {', '.join(FRONT_ENDS)}, or \"module:function\""
        )
    if not s.data.path:
        return
    from fedtiny.data.knobs import GENERIC_KNOBS, check_condition, default_condition
    from fedtiny.errors import DataError

    base = {**default_condition(), **s.fleet.condition}
    for where, cond in [("fleet.condition", s.fleet.condition), ("fleet.spread", s.fleet.spread)] + [
        (f"drift[{i}].condition", e.condition) for i, e in enumerate(s.drift)
    ]:
        for k, v in cond.items():
            if k not in GENERIC_KNOBS:
                raise ScenarioError(
                    f"{src}: '{where}.{k}' is not a drift knob of recorded data; expected one of: "
                    f"{', '.join(GENERIC_KNOBS)}"
                )
            values = [base[k] - v, base[k] + v] if where == "fleet.spread" else [v]
            for x in values:
                try:
                    check_condition({k: x}, f"{src}: '{where}.{k}'")
                except DataError as exc:
                    raise ScenarioError(str(exc)) from None
    for i, e in enumerate(s.drift):
        if e.kind != "condition":
            raise ScenarioError(
                f"{src}: 'drift[{i}].kind' = {e.kind!r} needs a generated task; with recorded data "
                "(data.path) class changes come from the data itself (each device's later examples); "
                'use kind = "condition" with the generic knobs'
            )


def _check_semantics(s: Scenario, src: str) -> None:
    from fedtiny.errors import FedTinyError
    from fedtiny.tasks import TASKS, get_task, load_task_class  # numpy only; checks params, drift knobs

    _check_user_files(s, src)
    try:  # the name first: an unknown task or an unusable "module:Class" is task.name's fault
        if ":" in s.task.name:
            load_task_class(s.task.name)
        elif s.task.name not in TASKS:
            get_task(s.task.name)
    except FedTinyError as exc:
        raise ScenarioError(f"{src}: 'task.name': {exc}") from None
    try:
        task = get_task(s.task.name, **s.task.params)
    except (FedTinyError, TypeError) as exc:
        key = "task.params" if s.task.params else "task.name"
        raise ScenarioError(f"{src}: '{key}': {exc}") from None
    knobs = set(task.drift_knobs) if not s.data.path else set()
    for where, cond in [("fleet.condition", s.fleet.condition), ("fleet.spread", s.fleet.spread)] + [
        (f"drift[{i}].condition", e.condition) for i, e in enumerate(s.drift)
    ]:
        for k, v in cond.items() if not s.data.path else []:
            if k not in knobs:
                raise ScenarioError(
                    f"{src}: '{where}.{k}' is not a drift knob of task '{task.name}'; expected one of: {', '.join(sorted(knobs))}"
                )
            problem = task.knob_problem(k, v) if where != "fleet.spread" else ""
            if problem:
                raise ScenarioError(
                    f"{src}: '{where}.{k}' {problem} (drift knob of task '{task.name}': {task.drift_knobs[k]})"
                )
    if not s.data.path:
        _check_spread(s, task, src)
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
            raise ScenarioError(
                f"{src}: 'fleet.boards.{name}' = {frac!r}; expected a fraction between 0 and 1"
            )
    if s.fleet.boards and abs(sum(s.fleet.boards.values()) - 1.0) > 1e-6:
        raise ScenarioError(
            f"{src}: 'fleet.boards' fractions sum to {sum(s.fleet.boards.values()):.4g}; expected 1"
        )
    _check_drift_options(s, src)
    _check_strategy(s, src)
    groups = {"fleet"}
    for i, e in enumerate(s.drift):
        if e.target and e.target not in groups:
            raise ScenarioError(
                f"{src}: 'drift[{i}].target' = {e.target!r} is not a group of an earlier event; expected one of: {', '.join(sorted(groups))}"
            )
        for c in e.classes:
            if not 0 <= c < task.num_classes:
                raise ScenarioError(
                    f"{src}: 'drift[{i}].classes' has {c}; expected class indices 0..{task.num_classes - 1}"
                )
        if e.kind == "new_class" and not e.classes:
            raise ScenarioError(
                f"{src}: 'drift[{i}].classes' is empty; a new_class event needs the class indices that appear"
            )
        if e.kind == "condition" and not e.condition:
            raise ScenarioError(
                f"{src}: 'drift[{i}].condition' is empty; a condition event needs knobs, e.g. {{ gain = 0.5 }}"
            )
        groups.add(e.group)


def _check_strategy(s: Scenario, src: str) -> None:
    """strategy.name names a Flower strategy (built in, or a user's "module:Class" Strategy subclass) and
    [strategy.params] fit its constructor (fedtiny/server/strategy.py)."""
    from fedtiny.server.strategy import FLOWER_STRATEGIES, canonical_name, make_strategy, strategy_class

    name = s.strategy.name
    if (
        canonical_name(name) in FLOWER_STRATEGIES
        and not s.strategy.params
        and "differentialprivacy" not in canonical_name(name)
    ):
        return  # a built-in strategy with its defaults: nothing to check (and no Flower import)
    try:
        strategy_class(name)
    except ValueError as exc:
        raise ScenarioError(f"{src}: 'strategy.name' = {exc}") from None
    try:
        make_strategy(s)
    except ValueError as exc:
        raise ScenarioError(f"{src}: {exc}") from None


def _check_spread(s: Scenario, task: Any, src: str) -> None:
    """fleet.condition +/- fleet.spread must stay inside every knob's range (devices are drawn in between)."""
    base = {**task.default_condition(), **s.fleet.condition}
    for k, sp in s.fleet.spread.items():
        where = f"fleet.spread.{k}"
        if sp < 0:
            raise ScenarioError(
                f"{src}: '{where}' = {sp:g} is below the minimum 0 (a spread is the half-width of a +/- range)"
            )
        for v in (base[k] - sp, base[k] + sp):
            problem = task.knob_problem(k, v)
            if problem:
                lo, hi = task.knob_ranges[k]
                raise ScenarioError(
                    f"{src}: '{where}' = {sp:g}: {k} {base[k]:g} +/- {sp:g} reaches {v:g}, outside the "
                    f"range {lo:g}..{hi:g} of drift knob '{k}'"
                )


_DRIFT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DriftEvent)}
_RESERVED_GROUPS = ("all",)  # the whole-fleet row of the results


def _default_target_groups(s: Scenario, raw: Any) -> None:
    """A targeted event acts on the devices of its target group; its ``group`` defaults to the target."""
    for i, e in enumerate(s.drift):
        given = isinstance(raw, list) and i < len(raw) and isinstance(raw[i], dict) and "group" in raw[i]
        if e.target and not given:
            e.group = e.target


def _check_drift_options(s: Scenario, src: str) -> None:
    """Refuse drift options that conflict or mean nothing for the event's kind (docs/drift-events.md)."""
    drawn: dict[str, float] = {}  # named group -> largest fraction drawn for it (exclusive draws)
    for i, e in enumerate(s.drift):
        ev = f"drift[{i}]"
        for key in ("group", "target"):
            name = getattr(e, key)
            if name in _RESERVED_GROUPS:
                raise ScenarioError(
                    f"{src}: '{ev}.{key}' = {name!r} is reserved (the whole-fleet row of the results); choose another name"
                )
        if not e.group.strip():
            raise ScenarioError(f"{src}: '{ev}.group' is empty; expected a group name")
        if e.target:
            if e.group != e.target:
                raise ScenarioError(
                    f"{src}: '{ev}.group' = {e.group!r} conflicts with '{ev}.target' = {e.target!r}: a targeted "
                    f"event acts on the devices of group {e.target!r}, which stay in it; leave 'group' out"
                )
            if e.fraction != _DRIFT_DEFAULTS["fraction"]:
                raise ScenarioError(
                    f"{src}: '{ev}.fraction' = {e.fraction:g} conflicts with '{ev}.target' = {e.target!r}: a "
                    "targeted event hits every device of its group; give 'fraction' or 'target', not both"
                )
        if e.kind != "condition" and e.condition:
            raise ScenarioError(
                f"{src}: '{ev}.condition' means nothing for kind = {e.kind!r} (only condition events set drift "
                'knobs); put it in its own kind = "condition" event'
            )
        if e.kind != "new_class" and e.classes:
            raise ScenarioError(
                f"{src}: '{ev}.classes' means nothing for kind = {e.kind!r} (only new_class events take classes)"
            )
        if e.kind != "label_shift" and e.alpha != _DRIFT_DEFAULTS["alpha"]:
            raise ScenarioError(
                f"{src}: '{ev}.alpha' means nothing for kind = {e.kind!r} (only label_shift events take alpha)"
            )
        if not e.target:
            others = sum(f for g, f in drawn.items() if g != e.group)
            if e.group != "fleet":
                drawn[e.group] = max(drawn.get(e.group, 0.0), e.fraction)
            if others + e.fraction > 1.0 + 1e-9:
                sizes = ", ".join(f"{g} {f:g}" for g, f in drawn.items() if g != e.group)
                raise ScenarioError(
                    f"{src}: '{ev}.fraction' = {e.fraction:g}: fraction-drawn groups are exclusive and other "
                    f"groups already hold {others:g} of the fleet ({sizes}); the fractions may sum to at most 1"
                )


def _table(obj: Any) -> dict[str, Any]:
    """A schema dataclass as a TOML table in field order; empty lists and tables (every one's default) left out."""
    table: dict[str, Any] = {}
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
