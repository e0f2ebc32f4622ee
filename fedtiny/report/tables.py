"""The report's tables as typed data: the comparison of methods per drift event and on the whole fleet, and
the run's facts. Cells are text; the template escapes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedtiny.report.words import finite, pct_ci, plural, pts, words
from fedtiny.summary import ComparisonRow, Summary

if TYPE_CHECKING:
    from fedtiny.config import Scenario


@dataclass(frozen=True)
class Table:
    head: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    """The drift events' table (with its note's recovery threshold, in percent) and the whole fleet's."""

    events: Table | None
    fleet: Table | None
    recover_pct: int

    def __bool__(self) -> bool:
        return self.events is not None or self.fleet is not None


_EVENT_HEAD = [
    "drift event",
    "method",
    "before the drift",
    "right after",
    "drop",
    "recovered?",
    "at the end of the event",
    "mean from the drift on",
    "forgetting (pre-drift data)",
]


def _ci(r: Mapping[str, object], key: str) -> str:
    return pct_ci(r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi"))


def _event_row(r: ComparisonRow) -> list[str]:
    rec = r.get("recovery")
    seen = int(r.get("end", r["at"])) - int(r["at"]) + 1
    if rec == "recovered":
        recovered = f"in {plural(r.get('rounds_to_recover'))}"
    elif rec == "no drop":
        recovered = "no drop to recover"
    elif r["method"] == "static":
        recovered = "does not learn"
    else:
        recovered = f"not in {plural(seen)}"
    end = _ci(r, "recovered_accuracy")
    if r.get("final_within_noise") is True:
        end += " ≈ federated"
    return [
        f"{r.get('event', r['group'])} (round {r['at']})",
        str(r["method"]),
        _ci(r, "pre_drift"),
        _ci(r, "after_drift"),
        pts(r.get("drop")) + (" (noise)" if r.get("drop_within_noise") is True else ""),
        recovered,
        f"{end} (round {r.get('end', '')})",
        _ci(r, "auc"),
        pts(r.get("forgetting")) if r.get("forgetting") is not None else "-",
    ]


def _fleet_row(r: ComparisonRow) -> list[str]:
    d = r.get("final_diff_vs_federated")
    vs = ""
    if r["method"] != "federated" and isinstance(d, (int, float)) and finite(d):
        vs = f"{-100 * d:+.1f} pts" + (" (within noise)" if r.get("final_within_noise") is True else "")
    return [str(r["method"]), _ci(r, "initial"), _ci(r, "final"), _ci(r, "auc"), vs]


def comparison_tables(summary: Summary, recover: float) -> Comparison:
    """summary.json's comparison as two tables: per drift event, and the whole fleet."""
    rows = summary.get("comparison", [])
    ev_rows = [r for r in rows if "pre_drift" in r]
    all_rows = [r for r in rows if r.get("group") == "all" and "pre_drift" not in r]
    events = Table(_EVENT_HEAD, [_event_row(r) for r in ev_rows]) if ev_rows else None
    fleet = None
    if all_rows:
        a = all_rows[0].get("auc_from", 1)
        since = (
            f"mean from the first drift on (round {a})"
            if ev_rows
            else f"mean over rounds {a}–{summary.get('rounds_done', '')}"
        )
        head = ["whole fleet", "before learning", "last round", since, "difference to federated (last round)"]
        fleet = Table(head, [_fleet_row(r) for r in all_rows])
    return Comparison(events, fleet, int(100 * recover))


def facts(s: Scenario, summary: Summary) -> list[tuple[str, str]]:
    """The run's facts as (name, value in words)."""
    stats = summary.get("fleet_stats", {})
    reasons = {k: n for k, n in summary.get("updates_rejected_reasons", {}).items() if n}
    values: dict[str, object] = {
        "rounds": f"{summary.get('rounds_done', s.rounds)} of {s.rounds}",
        "accuracy before learning": _ci(summary, "initial_accuracy"),
        "accuracy after the last round": _ci(summary, "final_accuracy"),
        "updates rejected": f"{words(summary.get('updates_rejected', 0))}"
        + (f" ({words(reasons)})" if reasons else ""),
        "stragglers dropped": summary.get("stragglers", 0),
        "bytes up": summary.get("bytes_up"),
        "bytes down": summary.get("bytes_down"),
        "energy for learning (J)": summary.get("energy_j", 0),
        "wall time (s)": summary.get("wall_seconds"),
        **{f"fleet: {str(k).replace('_', ' ')}": v for k, v in stats.items()},
        "device RAM for learning (bytes)": summary.get("device_budget", {}).get("ram_bytes"),
    }
    # None: not measured in this kind of run (a field trial has no stragglers or energy model): left out
    return [(k, words(v)) for k, v in values.items() if v is not None]
