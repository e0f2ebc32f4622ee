"""What to try next, from what the numbers show: typed data (:data:`~fedtiny.report.words.Rich` texts and a
:class:`RecipeAdvice`), no HTML. The template shows ``code`` spans as something to type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedtiny.report.verdict import falling
from fedtiny.report.words import Rich, code, finite, pct, plain, plural
from fedtiny.summary import ComparisonRow, GroupMetrics, Summary, as_summary

if TYPE_CHECKING:
    from fedtiny.config import Scenario
    from fedtiny.report.plots import Curves


def comparison_row(summary: Mapping[str, object], event: str, method: str) -> ComparisonRow:
    """The row of summary.json's comparison for an event (or ``all``) and a method (a copy); {} when there is
    none."""
    return _row(as_summary(summary), event, method).copy()


def _row(summary: Summary, event: str, method: str) -> ComparisonRow:
    none: ComparisonRow = {}
    return next(
        (
            r
            for r in summary.get("comparison", [])
            if r.get("event", r.get("group")) == event and r.get("method") == method
        ),
        none,
    )


def _points(curve: list[float] | None) -> list[tuple[int, float]]:
    """(round, value) of a curve's finite values (baselines are evaluated on some rounds only)."""
    return [(r, float(v)) for r, v in enumerate(curve or []) if finite(v)]


def _at(points: list[tuple[int, float]], r: int) -> float:
    """The value at the last evaluated round at or before ``r`` (the first point when none is)."""
    before = [v for q, v in points if q <= r]
    return before[-1] if before else points[0][1]


@dataclass(frozen=True)
class RecipeAdvice:
    """A strategy change for a federated curve that is still rising or rises much slower than local-only."""

    why: tuple[str, ...]  # one or two reasons, in words
    what: str  # the change, in words
    change: str  # the change as ``--set`` arguments
    longer: int  # or run this many rounds

    def rich(self) -> Rich:
        first = self.why[0][0].upper() + self.why[0][1:]
        return (
            plain(f"{first}{'; ' + self.why[1] if len(self.why) > 1 else ''}: try {self.what}: "),
            code(self.change),
            plain(" ("),
            code("fedtiny init"),
            plain(" probes such recipes on your data), or run longer ("),
            code(f"--set rounds={self.longer}"),
            plain(")."),
        )


def recipe_advice(s: Scenario, curves: Curves | None) -> RecipeAdvice | None:
    """A concrete strategy change when the fleet's federated curve is still rising at the last round, or
    rises much slower than local-only learning; None otherwise.

    Still rising: it gained more than two standard errors (one point without them) over its last quarter of
    rounds (at least 2). Much slower: by the middle round local-only learning gained more than 2 points and
    federated learning less than half of what local-only gained."""
    if not curves:
        return None
    fed = _points(curves.get("federated", {}).get("all"))
    if len(fed) < 4:
        return None
    last, end = fed[-1]
    q = max(2, last // 4)
    se_pts = _points(curves.get("federated_se", {}).get("all"))
    se = se_pts[-1][1] if se_pts else 0.005
    rise = end - _at(fed, last - q)
    why = []
    if rise > max(2 * se, 0.01):
        why.append(
            f"the federated curve is still rising at round {last} (+{100 * rise:.1f} points over its last {q})"
        )
    loc = _points(curves.get("local-only", {}).get("all"))
    mid = max(1, last // 2)
    if len(loc) >= 2:
        fed_gain, loc_gain = _at(fed, mid) - fed[0][1], _at(loc, mid) - loc[0][1]
        if loc_gain > 0.02 and fed_gain < 0.5 * loc_gain:
            why.append(
                f"it rises much slower than local-only learning (+{100 * fed_gain:.1f} vs +{100 * loc_gain:.1f} "
                f"points by round {mid})"
            )
    if not why:
        return None
    name = str(s.strategy.name).lower()
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        cur = float(s.strategy.server_lr) or 0.1  # Flower's eta default
        change = f"--set strategy.server_lr={3 * cur:g}"
        what = f"a larger server step for {name} (server_lr {cur:g} now)"
    elif name in ("fedavg", "fedavgm", "fedprox"):
        change = "--set strategy.name=fedadam --set strategy.server_lr=0.03"
        what = "a server optimizer, which takes larger steps where the devices' updates agree"
    else:
        change = f"--set train.lr={2 * float(s.train.lr):g}"
        what = "larger on-device steps"
    return RecipeAdvice(tuple(why), what, change, 2 * int(s.rounds))


_PERSONALIZE = code("--set strategy.personalize=0.5")


def _drift_tips(s: Scenario, summary: Summary, not_back: list[GroupMetrics]) -> list[Rich]:
    """Tips for a drifted group federated learning did not win back."""
    f = not_back[0]
    done = int(summary.get("rounds_done", s.rounds))
    seen = int(f.get("end", done)) - int(f["at"]) + 1
    longer = max(2 * s.rounds, int(f["at"]) + 20)
    if falling(f):  # running longer would only show more of the fall
        tips: list[Rich] = [
            (
                plain(
                    f"Federated learning kept falling on the drifted group after its drift ({pct(f.get('after_drift'))} "
                    f"right after, {pct(f.get('recovered_accuracy'))} {plural(seen)} later): smaller on-device steps ("
                ),
                code(f"--set train.lr={float(s.train.lr) / 2:g}"),
                plain(") or a local head blended into the shared one ("),
                _PERSONALIZE,
                plain(") before running longer."),
            )
        ]
        return tips
    tips = [
        (
            plain(
                f"Federated learning did not win the drifted group back in the {plural(seen)} after its drift: "
                "run longer ("
            ),
            code(f"--set rounds={longer}"),
            plain(") to see whether it does."),
        )
    ]
    loc = summary.get("drift", {}).get(f.get("group", ""), {}).get("local-only", {})
    loc_acc, fed_acc = loc.get("recovered_accuracy"), f.get("recovered_accuracy")
    if finite(loc_acc, fed_acc) and loc_acc is not None and fed_acc is not None and loc_acc > fed_acc:
        tips.append(
            (
                plain(
                    "Local-only learning does better on the drifted group than the shared head: blend a local "
                    "head into it with "
                ),
                _PERSONALIZE,
                plain("."),
            )
        )
    elif _row(summary, "all", "federated"):
        tips.append(
            (
                plain(
                    "The shared head serves the whole fleet, where the drifted group is a minority: compare "
                    "per-device heads ("
                ),
                _PERSONALIZE,
                plain(") or more local training ("),
                code("--set train.epochs=4"),
                plain(")."),
            )
        )
    return tips


def _fleet_tip(summary: Summary, not_back: bool) -> Rich | None:
    """Federated against local-only learning on the whole fleet."""
    loc, fed = _row(summary, "all", "local-only"), _row(summary, "all", "federated")
    loc_final, fed_final = loc.get("final"), fed.get("final")
    if not (loc and fed and finite(loc_final, fed_final)) or loc_final is None or fed_final is None:
        return None
    if loc_final > fed_final and loc.get("final_within_noise") is False and not not_back:
        return (
            plain(
                "Each device learning alone beats the shared head: the devices differ more than one head can "
                "serve. Blend a local head into the shared one ("
            ),
            _PERSONALIZE,
            plain(") and compare."),
        )
    if loc.get("final_within_noise") is True:
        return (
            plain(
                "Federated and local-only learning end within noise of each other on the fleet: more rounds or "
                "more devices per round ("
            ),
            code("--set strategy.fraction=1.0"),
            plain(") would separate them."),
        )
    if fed_final > loc_final and not not_back:
        return (
            plain(
                "Federated learning beats learning alone here: try a robust aggregator against faulty devices ("
            ),
            code("--set strategy.name=median"),
            plain(") or the int8 uplink ("),
            code("--set strategy.uplink=int8"),
            plain(") to cut bytes."),
        )
    return None


def _width_tip(summary: Summary) -> Rich | None:
    """How to narrow intervals wider than 10 points."""
    widths = [
        hi - lo
        for r in summary.get("comparison", [])
        if finite(lo := r.get("final_lo"), hi := r.get("final_hi")) and lo is not None and hi is not None
    ]
    if not widths or max(widths) <= 0.1:
        return None
    wide = f"Some intervals are {100 * max(widths):.0f} points wide: "
    if str(summary.get("task", "")).startswith("data "):
        return (
            plain(
                wide + "each device tests on its few latest recorded examples; more recordings per device "
                "(or a larger "
            ),
            code("data.test_fraction"),
            plain(") narrow them."),
        )
    return (
        plain(wide + "more test data per device ("),
        code("--set fleet.test_samples_per_device=…"),
        plain(") or a larger held-out pool ("),
        code("--set fleet.pool_per_class=…"),
        plain(") narrows them."),
    )


def suggestions(s: Scenario, summary_json: Mapping[str, object], curves: Curves | None = None) -> list[Rich]:
    """What to try next, from what the numbers show."""
    summary = as_summary(summary_json)
    tips: list[Rich] = []
    recipe = recipe_advice(s, curves)
    if recipe is not None:
        tips.append(recipe.rich())
    if not summary.get("complete", True):
        out = str(summary.get("out_dir", "DIR"))
        resume = str(summary.get("resume_command", f"fedtiny run --resume {out}"))
        if resume:
            tips.append((plain("Finish the run: "), code(resume), plain(".")))
    feds = [per["federated"] for per in summary.get("drift", {}).values() if "federated" in per]
    not_back = [f for f in feds if f.get("recovery") == "never"]
    if not_back:
        tips += _drift_tips(s, summary, not_back)
    for tip in (_fleet_tip(summary, bool(not_back)), _width_tip(summary)):
        if tip is not None:
            tips.append(tip)
    return tips
