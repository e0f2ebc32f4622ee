"""Checks of a scenario that need the stages' registries: the task and its drift knobs, a user's files and
front end, the boards, the strategy and its parameters, the drift options. Run once, when the scenario is
loaded (:func:`fedtiny.plan.load_scenario`); every mistake is one ScenarioError line naming the key."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from fedtiny.config.loader import PATH_KEYS
from fedtiny.config.schema import DriftEvent, Scenario
from fedtiny.errors import ScenarioError
from fedtiny.fleet.drift import check_event, check_kind, drift_kind, kind_names
from fedtiny.plan.resolve import strategy_spec

if TYPE_CHECKING:
    from fedtiny.tasks import Task

_DRIFT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DriftEvent)}
_RESERVED_GROUPS = ("all",)  # the whole-fleet row of the results


def validate(s: Scenario, src: str) -> None:
    """Every check of this module (ScenarioError naming the first problem)."""
    for i, e in enumerate(s.drift):  # the kind first: every later check asks the kind's registry entry
        check_kind(e, i, src)
    _check_semantics(s, src)


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
        if not drift_kind(e).on_recorded_data:
            kinds = " or ".join(f'kind = "{n}"' for n in kind_names(lambda k: k.on_recorded_data))
            raise ScenarioError(
                f"{src}: 'drift[{i}].kind' = {e.kind!r} needs a generated task; with recorded data "
                "(data.path) class changes come from the data itself (each device's later examples); "
                f"use {kinds} with the generic knobs"
            )


def _check_semantics(s: Scenario, src: str) -> None:
    from fedtiny.errors import FedTinyError
    from fedtiny.tasks import TASKS, get_task, load_task_class  # numpy only; checks params, drift knobs

    _check_user_files(s, src)
    _check_labels(s, src)
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
    _check_drift_options(s, src, task.num_classes)
    _check_strategy(s, src)
    groups = {"fleet"}
    for i, e in enumerate(s.drift):
        if e.target and e.target not in groups:
            raise ScenarioError(
                f"{src}: 'drift[{i}].target' = {e.target!r} is not a group of an earlier event; expected one of: {', '.join(sorted(groups))}"
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
        make_strategy(strategy_spec(s))
    except ValueError as exc:
        raise ScenarioError(f"{src}: {exc}") from None


def _check_spread(s: Scenario, task: Task, src: str) -> None:
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


def _check_drift_options(s: Scenario, src: str, num_classes: int) -> None:
    """Refuse drift options that conflict or mean nothing for the event's kind, and what the kind itself
    refuses (its registry entry, fedtiny.fleet.drift; docs/drift-events.md)."""
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
        check_event(e, i, src, num_classes)
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


def _check_labels(s: Scenario, src: str) -> None:
    """[labels]: a noise matrix is square with probability rows, spread names fraction or noise (the number of
    classes is checked against the model's once it is read)."""
    lab = s.labels
    m = lab.noise_matrix
    if m:
        c = len(m)
        for i, row in enumerate(m):
            where = f"{src}: 'labels.noise_matrix' row {i}"
            if len(row) != c:
                raise ScenarioError(f"{where} has {len(row)} entries; expected {c} (a C x C matrix)")
            if not all(math.isfinite(v) and v >= 0 for v in row):
                raise ScenarioError(f"{where} = {row}: every entry must be a probability >= 0")
            if abs(sum(row) - 1.0) > 1e-6:
                raise ScenarioError(
                    f"{where} sums to {sum(row):g}; expected 1 (the label probabilities of class {i})"
                )
        if lab.noise:
            raise ScenarioError(f"{src}: 'labels.noise' and 'labels.noise_matrix' are both set; give one")
    for k, v in lab.spread.items():
        if k not in ("fraction", "noise"):
            raise ScenarioError(f"{src}: 'labels.spread.{k}': unknown; expected fraction or noise")
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ScenarioError(f"{src}: 'labels.spread.{k}' = {v:g}; expected 0 .. 1")
    from fedtiny.fleet.labels import EVENT_KEYS

    for i, e in enumerate(s.drift):
        for k, v in e.labels.items():
            where = f"{src}: 'drift[{i}].labels.{k}'"
            if k not in EVENT_KEYS:
                raise ScenarioError(f"{where}: unknown; expected one of {', '.join(EVENT_KEYS)}")
            hi = 1.0 if k in ("fraction", "noise") else 100_000.0
            if not (math.isfinite(v) and 0.0 <= v <= hi) or (
                k in ("delay_rounds", "budget_per_round") and v != int(v)
            ):
                whole = "a whole number " if k in ("delay_rounds", "budget_per_round") else ""
                raise ScenarioError(f"{where} = {v:g}; expected {whole}0 .. {hi:g}")
    if (
        lab.pseudo
        and lab.fraction >= 1.0
        and lab.budget_per_round == 0
        and not s.data.path
        and not any(e.labels for e in s.drift)
    ):
        raise ScenarioError(
            f"{src}: 'labels.pseudo' is set but every sample is labelled (labels.fraction = 1): "
            "pseudo-labels would never be used; lower labels.fraction or set labels.budget_per_round"
        )
