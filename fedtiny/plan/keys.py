"""The scenario keys and the ready scenarios, as text for people: ``fedtiny keys`` and ``fedtiny scenarios``.

Generated from the schema (types, defaults, ``min``/``max``, ``choices`` and ``doc`` of every field) and from
the reference tasks' drift knobs (``drift_knobs``, ``knob_ranges``), so the listing cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fedtiny.config.schema import DriftEvent, Scenario
from fedtiny.errors import FedTinyError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "true/false"}


def type_name(tp: object) -> str:
    """A field's type in words: ``integer``, ``table of numbers``, ``list of strings``..."""
    origin = typing.get_origin(tp)
    if origin is dict:
        _, val = typing.get_args(tp)
        return "table" if val is Any else f"table of {_plural(val)}"
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_plural(item)}"
    name = _TYPE_NAMES.get(tp) if isinstance(tp, type) else None
    return name if name is not None else str(getattr(tp, "__name__", str(tp)))


def _plural(tp: object) -> str:
    plurals = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
    return plurals.get(tp, "values") if isinstance(tp, type) else "values"


def _toml(v: object) -> str:
    """A value as one line of inline TOML; tomli-w writes (and escapes) every string, number and key."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + " }" if v else "{}"
    if isinstance(v, list):  # tomli-w spreads a non-empty array over lines
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return tomli_w.dumps({"v": v}).removeprefix("v = ").removesuffix("\n")


def _key(k: str) -> str:
    return tomli_w.dumps({k: 0}).removesuffix(" = 0\n")


def _rule(meta: Mapping[str, object]) -> str:
    if "choices" in meta:
        return "one of: " + ", ".join(_names(meta["choices"]))
    if "names" in meta:
        return "one of: " + ", ".join(_names(meta["names"])) + ', or "module:Class"'
    if "min" in meta or "max" in meta:
        lo, hi = meta.get("min", "-inf"), meta.get("max", "inf")
        return f"{lo:,}..{hi:,}" if isinstance(lo, int) and isinstance(hi, int) else f"{lo:g}..{hi:g}"
    return ""


def _names(v: object) -> list[str]:
    """A field's ``choices`` or ``names`` (strings)."""
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else []


def _default(f: dataclasses.Field[object]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def key_rows(
    cls: type[DataclassInstance] = Scenario, prefix: str = ""
) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, rule, doc) for every leaf key of the schema, in file order."""
    hints = typing.get_type_hints(cls)
    rows: list[tuple[str, str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows += key_rows(tp, f"{key}.")
        elif typing.get_origin(tp) is list and typing.get_args(tp)[0] is DriftEvent:
            rows += key_rows(DriftEvent, f"{key}[].")
        else:
            rows.append(
                (key, type_name(tp), _toml(_default(f)), _rule(f.metadata), f.metadata.get("doc", ""))
            )
    return rows


def _section(key: str) -> str:
    head = key.split(".")[0]
    return head.removesuffix("[]") if "." in key else ""


def knob_lines() -> list[str]:
    """The drift knobs of every reference task with their ranges and meaning."""
    from fedtiny.tasks import TASKS, get_task

    lines = ["# drift knobs (fleet.condition, fleet.spread, drift[].condition) of the reference tasks"]
    for name in TASKS:
        task = get_task(name)
        lines.append(f"# task {name}")
        for knob, doc in task.drift_knobs.items():
            lo, hi = task.knob_ranges.get(knob, (float("-inf"), float("inf")))
            lines.append(f"{knob} = {task.default_condition()[knob]:g}  # number, {lo:g}..{hi:g}")
            lines.append(f"    {doc}")
    return lines


def format_keys(section: str | None = None) -> str:
    """Every scenario key as TOML-like text: ``key = default  # type, range`` and its meaning below."""
    rows = key_rows()
    sections = list(dict.fromkeys(_section(k) for k, *_ in rows))
    if section is not None and section.strip("[]") not in sections + ["knobs"]:
        raise FedTinyError(
            f"unknown section {section!r}; expected one of: {', '.join(s for s in sections if s)}, knobs"
        )
    want = section.strip("[]") if section is not None else None
    lines = [
        "# Every scenario key: key = default  # type, range or choices; its meaning below.",
        "# A scenario file sets only what differs from the defaults; --set key=value overrides one key.",
    ]
    current = None
    for key, tp, default, rule, doc in rows:
        sec = _section(key)
        if want is not None and sec != want:
            continue
        if sec != current:
            current = sec
            if sec == "drift":
                lines.append(
                    "\n[[drift]]  # a list of events, each with these keys (see docs/drift-events.md)"
                )
            elif sec:
                lines.append(f"\n[{sec}]")
            else:
                lines.append("\n# top level")
        name = key[len(sec) + 3 if sec == "drift" else len(sec) + 1 :] if sec else key
        lines.append(f"{name} = {default}  # {tp}{', ' + rule if rule else ''}")
        if doc:
            lines.append(f"    {doc}")
    if want in (None, "knobs"):
        lines.append("")
        lines += knob_lines()
    return "\n".join(lines).lstrip("\n")


def default_scenarios_dir() -> Path:
    """``scenarios/`` of the current directory, else the one next to the fedtiny package (a source checkout)."""
    here = Path("scenarios")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "scenarios"


def list_scenarios(directory: Path | None = None) -> list[tuple[Path, str]]:
    """(file, first comment line) of every ``*.toml`` in ``directory``; FedTinyError if there is none."""
    d = directory if directory is not None else default_scenarios_dir()
    files = sorted(d.glob("*.toml")) if d.is_dir() else []
    if not files:
        raise FedTinyError(f"{d}: no scenario files (*.toml) found")
    rows = []
    for p in files:
        first = ""
        try:
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("#"):
                    first = line.lstrip("#").strip()
                    break
        except OSError as exc:
            first = f"(cannot read: {exc.strerror or exc})"
        rows.append((p, first))
    return rows
