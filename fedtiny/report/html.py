"""A self-contained report.html (PNGs inlined as base64: open it in a browser, no server) plus the PNGs.

The report opens with a headline that answers the run's question in numbers with their 95% intervals
(:mod:`fedtiny.report.headline`, :mod:`fedtiny.report.advice`); then the plots (:mod:`fedtiny.report.plots`),
the comparison table and the fleet's facts (:mod:`fedtiny.report.tables`). The HTML is
templates/report.html.j2, rendered with autoescape on: names from the scenario or the user's data are escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from markupsafe import Markup

from fedtiny.report.advice import recipe_advice as _recipe
from fedtiny.report.headline import METHOD_NAMES, clean_set_note, headline
from fedtiny.report.inference_html import UserModel, inference_table
from fedtiny.report.jinja import render, rich_html
from fedtiny.report.plots import (
    FIELD_COUNTS,
    METHOD_STYLE,
    Curves,
    groups_caption,
    plot_costs,
    plot_fleet,
    plot_groups,
)
from fedtiny.report.tables import comparison_tables, facts
from fedtiny.summary import Summary, as_summary

if TYPE_CHECKING:
    from fedtiny.config import Scenario
    from fedtiny.results import RoundRow

__all__ = [
    "METHOD_NAMES",
    "METHOD_STYLE",
    "headline_html",
    "recipe_advice",
    "write_report",
]


class _Rounds(Protocol):
    @property
    def rows(self) -> list[RoundRow]: ...
    @property
    def curves(self) -> Curves: ...


class ReportPlan(Protocol):
    """What the report reads of a run's plan (a :class:`fedtiny.plan.RunPlan`; a field trial passes its own):
    the scenario, and the server's rows and curves. A simulation's plan also holds ``tflite`` and
    ``base_meta`` (the user's model in the inference table)."""

    @property
    def scenario(self) -> Scenario: ...
    @property
    def server(self) -> _Rounds: ...


@dataclass(frozen=True)
class Image:
    alt: str
    base64: str

    @classmethod
    def of(cls, path: Path) -> Image:
        return cls(path.name, base64.b64encode(path.read_bytes()).decode())


def recipe_advice(s: Scenario, curves: Curves | None) -> str:
    """A concrete strategy change (as ``--set`` arguments, HTML) when the fleet's federated curve is still
    rising at the last round, or rises much slower than local-only learning; "" otherwise
    (:func:`fedtiny.report.advice.recipe_advice` has it as data)."""
    advice = _recipe(s, curves)
    return "" if advice is None else rich_html(advice.rich())


def headline_html(
    s: Scenario,
    summary: Mapping[str, object],
    sizes: dict[str, int],
    curves: Curves | None = None,
) -> str:
    """The report's opening: the answer in numbers with 95% intervals, and what to try next."""
    return render("headline.html.j2", headline=headline(s, as_summary(summary), sizes, curves))


def _title(s: Scenario, summary: Summary) -> str:
    label = str(summary.get("task") or s.task.name)
    if label.startswith("data "):
        label = f"recorded data ‘{label[5:]}’"
    return f"{s.name}: {label}, {s.fleet.devices} devices, {s.strategy.name}"


def _user_model(s: Scenario, plan: ReportPlan) -> UserModel | None:
    """The run's own model when the user brought one (its row leads the inference table)."""
    source = s.model.tflite or s.model.keras
    if not source:
        return None
    tflite, meta = getattr(plan, "tflite", None), getattr(plan, "base_meta", None)
    if not isinstance(tflite, bytes):  # a field trial's plan holds no model bytes
        return None
    acc = meta.get("int8_accuracy") if isinstance(meta, dict) else None
    return UserModel(f"your model ({Path(source).name})", tflite, acc if isinstance(acc, float) else None)


def write_report(
    plan: ReportPlan,
    summary_json: Mapping[str, object],
    out: Path,
    intro: str = "",
    extra_html: str = "",
    trial: bool = False,
) -> list[str]:
    """Write groups.png, costs.png, fleet.png and report.html; returns the file names. A field trial passes its
    own ``intro`` (text, escaped; no baselines there), ``extra_html`` (its boards and their failures, shown
    first: HTML from the caller, inserted as it is) and ``trial``: only what a trial measures is drawn (no
    energy, virtual time or per-device histograms; no per-group panel that would repeat the accuracy plot)."""
    s = plan.scenario
    rows = plan.server.rows
    curves = plan.server.curves
    summary = as_summary(summary_json)
    drift = [(e.group, e.at) for e in s.drift if e.group != "fleet"]
    title = _title(s, summary)
    groups = summary.get("fleet_stats", {}).get("groups", {})
    sizes = {str(k): int(v) for k, v in groups.items()} if isinstance(groups, dict) else {}
    subset = min(s.eval.baseline_devices, s.fleet.devices)
    panel_sizes = sizes if subset >= s.fleet.devices else {}
    groups_png: Image | None = None
    caption = ""
    only_fleet = set(curves) <= {"federated"} and set(curves.get("federated", {})) <= {"all"}
    if not (trial and only_fleet):  # a trial's one curve is the accuracy plot's already
        caption = groups_caption(
            plot_groups(
                curves,
                drift,
                out / "groups.png",
                title + ("" if subset >= s.fleet.devices else f" (comparison subset of {subset} devices)"),
                {**panel_sizes, "all": subset},
                "accuracy (%)" if trial else "accuracy (%), comparison subset",
            )
        )
        groups_png = Image.of(out / "groups.png")
    if trial:
        plot_costs(
            rows, out / "costs.png", energy=False, counts=FIELD_COUNTS, down_label="down: head redeployed"
        )
    else:
        plot_costs(rows, out / "costs.png")
    fleet_png = Image.of(out / "fleet.png") if plot_fleet(out, out / "fleet.png") else None
    acc_png = out / "accuracy.png"
    summary = {**summary, "out_dir": str(out)}
    methods = [m for m in METHOD_STYLE if curves.get(m)]
    doc = render(
        "report.html.j2",
        name=s.name,
        headline=headline(s, summary, sizes, curves),
        intro=intro
        or (
            f"{title}; seed {s.seed}; {s.rounds} rounds. Baselines (static model, local-only on-device learning) "
            f"and personalization are measured on the same seeded subset of {subset} devices."
        ),
        extra_html=Markup(extra_html),  # the caller's own HTML (a field trial's boards)
        accuracy=Image.of(acc_png) if acc_png.exists() else None,
        clean_set=clean_set_note(s, summary, rows),
        per_group="Per group: " + " vs ".join(methods) if len(methods) > 1 else "Per group",
        groups=groups_png,
        groups_caption=caption,
        comparison=comparison_tables(summary, s.eval.recover),
        costs=Image.of(out / "costs.png"),
        costs_title="Bytes and participation per round"
        if trial
        else "Bytes, energy and participation per round",
        fleet=fleet_png,
        facts=facts(s, summary),
        inference=inference_table(s.task.name, _user_model(s, plan)),
    )
    (out / "report.html").write_text(doc)
    drawn = {"groups.png": groups_png, "costs.png": True, "fleet.png": fleet_png}
    return ["report.html", *(name for name, made in drawn.items() if made)]
