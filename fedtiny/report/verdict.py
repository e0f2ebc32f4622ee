"""Did learning hurt? Federated learning that ends below the static model or local-only learning, beyond noise,
on the whole fleet or on a drifted group, is the first thing a user must read (console and report), and a
falling federated curve never gets "run longer" as advice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedtiny.summary import GroupMetrics, as_summary

#: the methods federated learning must not end below
BASELINES = ("static", "local-only")
NAMES = {"static": "the static model", "local-only": "local-only learning"}


@dataclass(frozen=True)
class Hurt:
    """Federated learning ends at ``federated`` on ``scope`` ("all" or a drifted group), below ``method``'s
    ``other``; the difference is beyond noise (outside its 95% interval)."""

    scope: str
    method: str
    federated: float
    other: float

    def text(self) -> str:
        where = "on the whole fleet" if self.scope == "all" else f"on group “{self.scope}”"
        return (
            f"Learning hurt {where}: federated learning ends at {100 * self.federated:.1f}%, below "
            f"{NAMES.get(self.method, self.method)} at {100 * self.other:.1f}% (beyond noise)"
        )


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def learning_hurt(summary_json: Mapping[str, object]) -> list[Hurt]:
    """Every scope where federated learning ends below a baseline beyond noise: the fleet first, then each
    drifted group (the comparison rows of summary.json: ``final`` and ``final_within_noise``, the paired test
    of federated minus the method)."""
    summary = as_summary(summary_json)
    rows = [r for r in summary.get("comparison", []) if isinstance(r, Mapping)]
    fed = {
        str(r.get("event", r.get("group"))): _num(r.get("final"))
        for r in rows
        if r.get("method") == "federated"
    }
    fed.setdefault("all", _num(summary.get("final_accuracy")))
    out = []
    for r in rows:
        scope, method = str(r.get("event", r.get("group"))), str(r.get("method"))
        f, o = fed.get(scope), _num(r.get("final"))
        if method in BASELINES and f is not None and o is not None and r.get("final_within_noise") is False:
            if o > f:
                out.append(Hurt(scope, method, f, o))
    return sorted(out, key=lambda h: (h.scope != "all", h.scope, BASELINES.index(h.method)))


def falling(fed: GroupMetrics) -> bool:
    """A drifted group's federated curve went further down after the drift (its accuracy at the end of the
    window is below the accuracy right after the drift by more than two standard errors of the drop)."""
    after, end = _num(fed.get("after_drift")), _num(fed.get("recovered_accuracy"))
    se = _num(fed.get("drop_se")) or 0.01
    return after is not None and end is not None and end < after - 2 * se
