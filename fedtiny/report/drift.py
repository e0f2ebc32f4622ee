"""Drift metrics per group and method: pre-drift accuracy, drop, rounds to recover, area under the curve,
forgetting on the old distribution; and the comparison table of federated vs local-only vs static.

``curves[method][group]`` is the accuracy per evaluation (index = round, 0 = before learning), computed on
the same subset of devices for every method; ``curves[f"{method}@old"][group]`` is the accuracy of a drifted
group on its pre-drift distribution.
"""

from __future__ import annotations

import math
from typing import Any

METHODS = ("federated", "local-only", "static", "personalized")


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def group_metrics(acc: list[float], at: int, recover: float, old: list[float] | None = None) -> dict[str, Any]:
    at = max(1, min(at, len(acc) - 1))
    pre = acc[at - 1]
    after = acc[at:]
    rec = next((i for i, a in enumerate(after) if a >= recover * pre), None)
    out = {
        "pre_drift": _num(pre),
        "after_drift": _num(after[0]),
        "drop": _num(pre - after[0]),
        "trough": _num(min(after)),
        "rounds_to_recover": rec,
        "auc": _num(sum(after) / len(after)),  # mean accuracy over the rounds from the drift on
        "final": _num(acc[-1]),
    }
    if old:
        out["old_pre_drift"] = _num(old[at - 1])
        out["old_final"] = _num(old[-1])
        out["forgetting"] = _num(old[at - 1] - old[-1])
    return out


def drift_metrics(curves: dict[str, dict[str, list[float]]], events: list[tuple[str, int]], recover: float = 0.95) -> dict[str, Any]:
    """{group: {method: metrics}} for every drift group with an event after round 0."""
    out: dict[str, Any] = {}
    for group, at in events:
        if at < 1:
            continue
        per = {}
        for m in METHODS:
            acc = curves.get(m, {}).get(group)
            if acc and len(acc) > at:
                per[m] = group_metrics(acc, at, recover, curves.get(f"{m}@old", {}).get(group))
                per[m]["at"] = at
        out[group] = per
    return out


def comparison(metrics: dict[str, Any], curves: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """One row per (group, method): the comparison table of the report."""
    rows = []
    for group, per in metrics.items():
        for m, v in per.items():
            rows.append({"group": group, "method": m, **v})
    for m in METHODS:  # whole-fleet outcome
        acc = curves.get(m, {}).get("all")
        if acc:
            rows.append({"group": "all", "method": m, "initial": _num(acc[0]), "final": _num(acc[-1]),
                         "auc": _num(sum(acc) / len(acc))})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text comparison table (for the CLI and notes)."""
    cols = ["group", "method", "pre_drift", "drop", "rounds_to_recover", "auc", "forgetting", "final"]
    lines = ["  ".join(f"{c:>17}" for c in cols)]
    for r in rows:
        if "pre_drift" not in r:
            continue
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'never' if (c == 'rounds_to_recover' and v is None) else ('-' if v is None else v):>17}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
