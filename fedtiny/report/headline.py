"""The report's opening: the run's answer in numbers with 95% intervals (what each drift cost, whether and how
fast federated learning won it back, against local-only learning and the static model) and what to try next;
and the note under the accuracy plot. Typed data (:class:`Headline`, :data:`~fedtiny.report.words.Rich`),
no HTML: the template shows it, escaping every name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedtiny.fleet import drift as drift_kinds
from fedtiny.report.advice import comparison_row, suggestions
from fedtiny.report.labels import labels_answer
from fedtiny.report.verdict import learning_hurt
from fedtiny.report.words import Rich, Span, as_text, bold, finite, knobs, pct, pct_ci, plain, plural
from fedtiny.summary import GroupMetrics, Summary

if TYPE_CHECKING:
    from fedtiny.config import Scenario
    from fedtiny.report.plots import Curves
    from fedtiny.results import RoundRow

METHOD_NAMES = {
    "federated": "federated learning",
    "local-only": "local-only learning",
    "static": "the static model",
    "personalized": "personalized heads",
}


@dataclass(frozen=True)
class Incomplete:
    """An interrupted run: ``rounds_done`` of ``rounds``, continued with ``resume`` (a command; "" for what does
    not resume, a field trial: it is started again)."""

    rounds_done: int
    rounds: int
    out_dir: str
    resume: str


@dataclass(frozen=True)
class Headline:
    incomplete: Incomplete | None = None
    answers: list[Rich] = field(default_factory=list)  # one per drift event, then the whole fleet
    tips: list[Rich] = field(default_factory=list)  # what to try next
    note: str = ""  # what the numbers in the answers are (shown under them)

    def __bool__(self) -> bool:
        return bool(self.incomplete or self.answers or self.tips)


def event_text(s: Scenario, group: str, at: int, size: int | None) -> str:
    """'At round 6, the 7 devices of group “remounted” drifted (resonance_hz 3500, noise 0.1)'."""
    ev = next((e for e in s.drift if e.group == group and e.at == at), None)
    what = ""
    if ev is not None and ev.kind in drift_kinds.DRIFT_KINDS:
        described = drift_kinds.DRIFT_KINDS[ev.kind].describe(ev)
        what = f" ({described})" if described else ""
    devices = f"the {size} devices of group “{group}”" if size else f"group “{group}”"
    return f"At round {at}, {devices} drifted{what}"


def _ci(d: Mapping[str, object], key: str) -> str:
    return pct_ci(d.get(key), d.get(f"{key}_lo"), d.get(f"{key}_hi"))


def _method_outcome(summary: Summary, event: str, m: str, v: GroupMetrics) -> str:
    """'local-only learning 45.0% (40.1–50.2) (within noise of federated)' at the end of the event's window."""
    out = f"{METHOD_NAMES.get(m, m)} {_ci(v, 'recovered_accuracy')}"
    if comparison_row(summary, event, m).get("final_within_noise") is True:
        out += " (within noise of federated)"
    return out


def event_answer(
    s: Scenario, summary: Summary, event: str, per: dict[str, GroupMetrics], sizes: dict[str, int]
) -> Rich:
    """What a drift event cost federated learning, whether it recovered, and the other methods at its end."""
    fed = per.get("federated")
    if not fed:
        return ()
    group, at, end = fed.get("group", event), int(fed["at"]), int(fed.get("end", fed["at"]))
    seen = end - at + 1
    recover = int(100 * s.eval.recover)
    before, right_after = _ci(fed, "pre_drift"), _ci(fed, "after_drift")
    at_end = _ci(fed, "recovered_accuracy")
    out: list[Span] = [plain(event_text(s, group, at, sizes.get(group)) + ". ")]
    rec = fed.get("recovery")
    if rec == "recovered":
        out += [
            plain(f"Federated learning fell from {before} to {right_after} and "),
            bold(f"recovered in {plural(fed.get('rounds_to_recover'))}"),
            plain(f" (back to {recover}% of its pre-drift accuracy); at round {end} it is at {at_end}. "),
        ]
    elif rec == "no drop":
        out += [
            plain(
                f"It cost federated learning less than {100 - recover}%: {before} before, {right_after} "
                f"right after; at round {end} it is at "
            ),
            bold(at_end),
            plain(". "),
        ]
    else:
        out += [
            plain(f"Federated learning fell from {before} to {right_after} and is at "),
            bold(f"{at_end} at round {end}"),
            plain(": "),
            bold("not back"),
            plain(f" to {recover}% of its pre-drift accuracy in the {plural(seen)} after the drift. "),
        ]
    others = [_method_outcome(summary, event, m, v) for m, v in per.items() if m != "federated"]
    if others:
        out.append(plain(f"At round {end}: " + "; ".join(others) + "."))
    return tuple(out)


def fleet_answer(summary: Summary, rounds_done: int) -> Rich:
    """The whole fleet: the deployed model before and after, the baselines, central training for reference."""
    a, z = summary.get("initial_accuracy"), summary.get("final_accuracy")
    if not finite(a, z):
        return ()
    out = [
        plain(
            f"On the whole fleet, the deployed int8 model went from {_ci(summary, 'initial_accuracy')} to "
        ),
        bold(_ci(summary, "final_accuracy")),
    ]
    others = []
    for m in ("local-only", "static", "personalized"):
        row = comparison_row(summary, "all", m)
        if row and finite(row.get("final")):
            noise = " (within noise of federated)" if row.get("final_within_noise") is True else ""
            others.append(f"{METHOD_NAMES[m]} {_ci(row, 'final')}{noise}")
    text = f" on the devices' own test data in {plural(rounds_done)}"
    text += ("; " + ", ".join(others) if others else "") + "."
    central = summary.get("base_model", {}).get("central_head_accuracy")
    if finite(central):
        text += (
            f" For reference, a head re-trained centrally on all the devices' earlier examples (what pooling the raw "
            f"data would give) reaches {pct(central)}."
        )
    out.append(plain(text))
    loc = comparison_row(summary, "all", "local-only")
    final = loc.get("final")
    if (
        loc.get("final_within_noise") is False
        and final is not None
        and z is not None
        and finite(final)
        and final > z
    ):
        out += [
            plain(" "),
            bold("Local-only learning ends higher than the shared head"),
            plain(", beyond noise."),
        ]
    return tuple(out)


def headline(s: Scenario, summary: Summary, sizes: dict[str, int], curves: Curves | None = None) -> Headline:
    """The answer in numbers with 95% intervals, and what to try next."""
    done = int(summary.get("rounds_done", s.rounds))
    incomplete = None
    if summary.get("complete") is False:
        out = str(summary.get("out_dir", "DIR"))
        incomplete = Incomplete(
            done, s.rounds, out, str(summary.get("resume_command", f"fedtiny run --resume {out}"))
        )
    # learning that hurt is said first, before what each drift cost
    answers: list[Rich] = [(bold(h.text() + "."),) for h in learning_hurt(summary)]
    answers.append(labels_answer(summary))  # what labels the devices had (nothing when every sample had one)
    answers += [event_answer(s, summary, ev, per, sizes) for ev, per in summary.get("drift", {}).items()]
    answers.append(fleet_answer(summary, done))
    answers = [a for a in answers if as_text(a)]
    return Headline(incomplete, answers, suggestions(s, summary, curves), answers_note(summary, answers))


def answers_note(summary: Summary, answers: list[Rich]) -> str:
    """What the headline's numbers are: only what they show (intervals when some are there, the comparison
    subset when a per-group or baseline number is there)."""
    trial = summary.get("kind") == "field trial"
    where = "each board's" if trial else "each device's"
    text = f"Accuracies are of the deployed int8 model on {where} own test data"
    if any(
        finite(summary.get(f"{k}_lo"), summary.get(f"{k}_hi")) for k in ("initial_accuracy", "final_accuracy")
    ):
        text += (
            "; numbers in parentheses are 95% intervals (Wilson, over the boards' pooled test samples: samples of "
            "one board are not independent, so they are optimistic)"
            if trial
            else "; numbers in parentheses are 95% intervals (over devices and test samples)"
        )
    if summary.get("drift") or summary.get("comparison"):
        text += "; per-group numbers are measured on the comparison subset, where every method runs on the same devices"
    return text + "." if answers else ""


def clean_set_note(s: Scenario, summary: Summary, rows: list[RoundRow]) -> str:
    """What the second line of the accuracy plot is, and why it may fall while the fleet's accuracy rises;
    "" when there is no such line."""
    if not rows or not finite(rows[0].accuracy_global, rows[-1].accuracy_global):
        return ""
    g0, g1 = rows[0].accuracy_global, rows[-1].accuracy_global
    recorded = str(summary.get("task", "")).startswith("data ")
    base = summary.get("base_model", {}).get("int8_accuracy_clean")
    if not recorded and not finite(base):
        return ""  # a field trial, or a user's model without a factory test set: no such line to explain
    trend = (
        f"falls from {pct(g0)} to {pct(g1)}"
        if g1 < g0 - 0.05
        else f"rises from {pct(g0)} to {pct(g1)}"
        if g1 > g0 + 0.05
        else f"stays near {pct(g1)}"
    )
    if recorded:
        same = all(abs(r.accuracy - r.accuracy_global) < 1e-9 for r in rows)
        return (
            f"The dashed line is the devices' recorded test examples in the base condition (no drift applied): it "
            f"{trend}. The solid line is the same devices in the condition they are in each round (drift applied)"
            + ("; without drift events the two coincide" if same else "")
            + "."
        )
    cond = knobs(s.fleet.condition) if s.fleet.condition else ""
    where = f"in another condition ({cond})" if cond else "in its own conditions"
    text = (
        f"The dashed line is the clean factory test set: the condition the base model was trained for "
        f"({pct(base)} there). The fleet works {where}, so the same model starts at "
        f"{pct(summary.get('initial_accuracy'))} on the devices' own data. Federated learning adapts the head to "
        f"the fleet's condition; its accuracy on clean factory data {trend}"
    )
    if g1 < g0 - 0.05:
        text += (
            ": the model specializes for where it is deployed, which is what the fleet needs (it is not evaluated on "
            "factory data in the field)"
        )
    return text + "."
