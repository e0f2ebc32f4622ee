"""Drift metrics per drift event and method, and the comparison table of federated vs local-only vs static.
Every metric is defined once, in docs/drift-events.md ("Metrics"), and computed here exactly that way.

``curves[method][group]`` is the accuracy per evaluation (index = round, 0 = before learning), computed on
the same subset of devices for every method; ``curves[method + "_lo" / "_hi"]`` its 95% interval and
``curves[method + "_se"]`` its standard error; ``curves[method + "_diff_se"]`` the paired standard error of
federated minus ``method``; ``curves[f"{method}@old"][group]`` (with the same suffixes) the accuracy of a
drifted group on its data before the group's first drift event.
"""

from __future__ import annotations

import math

from fedtiny.summary import ComparisonRow, DriftMetrics, GroupMetrics
from fedtiny.uncertainty import Z95

METHODS = ("federated", "local-only", "static", "personalized")
Curve = list[float]


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def _get(c: Curve | None, i: int) -> float | None:
    if c is None or not -len(c) <= i < len(c):
        return None
    return _num(c[i])


def _mean(c: Curve | None, a: int, b: int) -> float | None:
    """Mean of ``c[a..b]`` (inclusive), None if any value is missing."""
    if c is None or b >= len(c):
        return None
    v = [float(x) for x in c[a : b + 1]]
    return None if not v or any(math.isnan(x) for x in v) else sum(v) / len(v)


def _within(diff: float | None, se: float | None) -> bool | None:
    return None if diff is None or se is None else bool(abs(diff) <= Z95 * se)


def group_metrics(
    acc: Curve,
    at: int,
    recover: float,
    old: Curve | None = None,
    *,
    end: int | None = None,
    old_at: int | None = None,
    band: dict[str, Curve | None] | None = None,
) -> GroupMetrics:
    """Metrics of one drift event at round ``at`` on one method's curve ``acc`` (docs/drift-events.md).

    The event's window is rounds ``at..end`` (``end``: the round before the group's next event, else the last
    round). ``old`` is the group's accuracy on its data before its first event (at round ``old_at``, default
    ``at``). ``band`` holds the interval curves: ``lo``, ``hi``, ``se`` and the same for ``old``
    (``old_lo``, ``old_hi``, ``old_se``).
    """
    last = len(acc) - 1
    at = max(1, min(at, last))
    end = last if end is None else max(at, min(end, last))
    band = band or {}
    pre, after = float(acc[at - 1]), [float(a) for a in acc[at : end + 1]]
    threshold = recover * pre
    rec = next((i for i, a in enumerate(after) if a >= threshold), None)
    if after[0] >= threshold:
        recovery, rounds = (
            "no drop",
            None,
        )  # the drift cost less than the recovery threshold: nothing to recover
    elif rec is None:
        recovery, rounds = "never", None
    else:
        recovery, rounds = "recovered", rec
    drop_raw = pre - after[0]
    drop, auc = _num(max(0.0, drop_raw)), _num(sum(after) / len(after))
    lo, hi, se = band.get("lo"), band.get("hi"), band.get("se")
    s_pre, s_after, s_auc = _get(se, at - 1), _get(se, at), _mean(se, at, end)
    drop_se = _num(math.hypot(s_pre, s_after)) if s_pre is not None and s_after is not None else None
    out: GroupMetrics = {
        "at": at,
        "end": end,
        "pre_drift": _num(pre),
        "after_drift": _num(after[0]),
        "drop": drop,
        "drop_raw": _num(drop_raw),
        "trough": _num(min(after)),
        "recovery": recovery,
        "rounds_to_recover": rounds,
        "recovered_accuracy": _num(after[-1]),
        "auc": auc,
        "final": _num(acc[-1]),
        "pre_drift_lo": _get(lo, at - 1),
        "pre_drift_hi": _get(hi, at - 1),
        "after_drift_lo": _get(lo, at),
        "after_drift_hi": _get(hi, at),
        "recovered_accuracy_lo": _get(lo, end),
        "recovered_accuracy_hi": _get(hi, end),
        "final_lo": _get(lo, last),
        "final_hi": _get(hi, last),
        "drop_se": drop_se,
        "drop_within_noise": _within(drop, drop_se),
        "auc_lo": _num(max(0.0, auc - Z95 * s_auc)) if s_auc is not None and auc is not None else None,
        "auc_hi": _num(min(1.0, auc + Z95 * s_auc)) if s_auc is not None and auc is not None else None,
    }
    if old:
        oa = max(1, min(old_at or at, last))
        old_pre, old_final = _get(old, oa - 1), _get(old, last)
        o_lo, o_hi = band.get("old_lo"), band.get("old_hi")
        s1, s2 = _get(band.get("old_se"), oa - 1), _get(band.get("old_se"), last)
        out.update(
            {
                "old_at": oa,
                "old_pre_drift": old_pre,
                "old_final": old_final,
                "forgetting": _num(old_pre - old_final)
                if old_pre is not None and old_final is not None
                else None,
                "old_pre_drift_lo": _get(o_lo, oa - 1),
                "old_pre_drift_hi": _get(o_hi, oa - 1),
                "old_final_lo": _get(o_lo, last),
                "old_final_hi": _get(o_hi, last),
                "forgetting_se": _num(s1 + s2)
                if s1 is not None and s2 is not None
                else None,  # upper bound (same data)
            }
        )
    return out


def event_windows(events: list[tuple[str, int]], rounds: int) -> list[tuple[str, str, int, int, int]]:
    """(key, group, at, end, first_at) of every event after round 0: ``key`` is the group for its first event
    and ``group@at`` for later events of the same group; ``end`` the round before the group's next event, or
    ``rounds``; ``first_at`` the group's first event (whose pre-drift data is the group's old distribution)."""
    by_group: dict[str, list[int]] = {}
    for g, at in events:
        if at >= 1 and at not in by_group.setdefault(g, []):
            by_group[g].append(at)
    out = []
    for g, ats in by_group.items():
        ats.sort()
        for i, at in enumerate(ats):
            end = ats[i + 1] - 1 if i + 1 < len(ats) else rounds
            out.append((g if i == 0 else f"{g}@{at}", g, at, end, ats[0]))
    return out


def drift_metrics(
    curves: dict[str, dict[str, Curve]], events: list[tuple[str, int]], recover: float = 0.95
) -> DriftMetrics:
    """{event: {method: metrics}} for every drift event after round 0 (``event``: the group's name for its
    first event, ``group@at`` for a later event of the same group; ``metrics["group"]`` names the group)."""
    out: DriftMetrics = {}
    rounds = max((len(c) for m in METHODS for c in curves.get(m, {}).values()), default=1) - 1
    for key, group, at, end, first in event_windows(events, rounds):
        per: dict[str, GroupMetrics] = {}
        for m in METHODS:
            acc = curves.get(m, {}).get(group)
            if not acc or len(acc) <= at:
                continue
            band = {b: curves.get(f"{m}_{b}", {}).get(group) for b in ("lo", "hi", "se")}
            band.update({f"old_{b}": curves.get(f"{m}@old_{b}", {}).get(group) for b in ("lo", "hi", "se")})
            per[m] = {
                "group": group,
                **group_metrics(
                    acc, at, recover, curves.get(f"{m}@old", {}).get(group), end=end, old_at=first, band=band
                ),
            }
        out[key] = per
    return out


def _vs_federated(
    row: ComparisonRow, curves: dict[str, dict[str, Curve]], m: str, group: str, a: int, b: int
) -> None:
    """Differences federated minus ``m`` (final and AUC over rounds a..b) with their paired standard errors and
    whether each is within noise (|difference| <= 1.96 SE)."""
    fed, acc, dse = (curves.get(k, {}).get(group) for k in ("federated", m, f"{m}_diff_se"))
    if m == "federated" or not fed or not acc:
        return
    d_final = _num(fed[-1] - acc[-1])
    fa, ma = _mean(fed, a, b), _mean(acc, a, b)
    d_auc = _num(fa - ma) if fa is not None and ma is not None else None
    se_final, se_auc = _get(dse, -1), _num(_mean(dse, a, b))  # mean of per-round SEs bounds the SE of a mean
    row.update(
        {
            "final_diff_vs_federated": d_final,
            "final_diff_se": se_final,
            "final_within_noise": _within(d_final, se_final),
            "auc_diff_vs_federated": d_auc,
            "auc_diff_se": se_auc,
            "auc_within_noise": _within(d_auc, se_auc),
        }
    )


def comparison(metrics: DriftMetrics, curves: dict[str, dict[str, Curve]]) -> list[ComparisonRow]:
    """One row per (drift event, method), then one per method for the whole fleet (``group`` = ``all``): the
    comparison table of the report. Rows of methods other than federated say whether their difference to
    federated is within noise."""
    rows: list[ComparisonRow] = []
    starts = []
    for key, per in metrics.items():
        for m, v in per.items():
            row: ComparisonRow = {"event": key, "group": v.get("group", key), "method": m, **v}
            _vs_federated(row, curves, m, row["group"], v["at"], v["end"])
            rows.append(row)
            starts.append(v["at"])
    start = min(
        starts, default=1
    )  # the whole fleet: AUC from the first drift on (from round 1 without drift)
    for m in METHODS:
        acc = curves.get(m, {}).get("all")
        if not acc:
            continue
        last = len(acc) - 1
        a = max(1, min(start, last))
        lo, hi, se = (curves.get(f"{m}_{b}", {}).get("all") for b in ("lo", "hi", "se"))
        auc, s_auc = _mean(acc, a, last), _mean(se, a, last)
        row = {
            "event": "all",
            "group": "all",
            "method": m,
            "auc_from": a,
            "initial": _num(acc[0]),
            "initial_lo": _get(lo, 0),
            "initial_hi": _get(hi, 0),
            "final": _num(acc[-1]),
            "final_lo": _get(lo, -1),
            "final_hi": _get(hi, -1),
            "auc": _num(auc),
            "auc_lo": _num(max(0.0, auc - Z95 * s_auc)) if auc is not None and s_auc is not None else None,
            "auc_hi": _num(min(1.0, auc + Z95 * s_auc)) if auc is not None and s_auc is not None else None,
        }
        _vs_federated(row, curves, m, "all", a, last)
        rows.append(row)
    return rows


#: (summary key, column header) of the console's comparison table
_TABLE = (
    ("event", "group"),
    ("method", "method"),
    ("pre_drift", "before"),
    ("drop", "drop"),
    ("rounds_to_recover", "recovery"),
    ("auc", "AUC"),
    ("forgetting", "forgot"),
    ("final", "final"),
)


def format_table(rows: list[ComparisonRow]) -> str:
    """Plain-text comparison table (for the CLI and notes), each column as wide as its widest cell so that it
    fits an 80-column terminal: accuracies in %, drop and forgetting in points, ``~`` after a final accuracy
    within noise of federated learning's; a legend line under it."""
    table = [[h for _, h in _TABLE]]
    for r in rows:
        if "pre_drift" not in r:
            continue
        cells = []
        for key, _ in _TABLE:
            v = r.get(key)
            if key in ("pre_drift", "auc", "final") and isinstance(v, (int, float)):
                v = f"{100 * v:.1f}%"
            elif key in ("drop", "forgetting") and isinstance(v, (int, float)):
                v = f"{100 * v:.1f} pts"
            elif key == "rounds_to_recover":
                v = r.get("recovery", "never") if v is None else f"{v} rd"
            if key == "final" and r.get("final_within_noise"):
                v = f"{v}~"
            cells.append("-" if v is None else str(v))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(_TABLE))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]  # fmt: skip
    lines.append("before: pre-drift; recovery: rounds to get back; ~: within noise of federated")
    return "\n".join(lines)
