"""What labels the devices had, for the report's headline (docs/labels.md): the section in words, what the
devices trained on over the run, and the warning when the boards' own labels are worse than their model."""

from __future__ import annotations

from collections.abc import Mapping

from fedtiny.report.words import Rich, Span, bold, finite, pct, plain
from fedtiny.summary import LabelsSummary


def labels_summary(
    section: Mapping[str, object], rows_labels: list[dict[str, int]], model_accuracy: float
) -> LabelsSummary:
    """summary.json's ``labels``: the section, the totals over the run's rounds, the pseudo-labels' accuracy
    and the deployed model's mean accuracy over the rounds that used pseudo-labels (what they are compared to)."""
    keys = ("labels_used", "labels_late", "labels_wrong", "pseudo_used", "pseudo_checked", "pseudo_correct")
    totals = {k: sum(int(r.get(k, 0)) for r in rows_labels) for k in keys}
    checked = totals["pseudo_checked"]
    return {
        "section": dict(section),
        "totals": totals,
        "pseudo_accuracy": totals["pseudo_correct"] / checked if checked else None,
        "model_accuracy": model_accuracy,
    }


def _num(v: object, default: float = 0.0) -> float:
    return float(v) if isinstance(v, int | float) else default


def describe(section: Mapping[str, object]) -> str:
    """The label section in words: '10% of samples labelled, 2 rounds late, 5% of labels wrong, ...'."""
    parts = [f"{pct(_num(section.get('fraction'), 1.0), 0)} of samples labelled"]
    delay = int(_num(section.get("delay_rounds")))
    if delay:
        parts.append(f"{delay} round{'s' if delay != 1 else ''} late")
    if _num(section.get("noise")):
        parts.append(f"{pct(_num(section.get('noise')), 1)} of labels wrong")
    if section.get("noise_matrix"):
        parts.append("labels confused as the noise matrix says")
    budget = int(_num(section.get("budget_per_round")))
    if budget:
        parts.append(f"at most {budget} labels per device per round")
    if _num(section.get("pseudo")):
        parts.append(
            f"boards pseudo-labelling samples they were at least {pct(_num(section.get('pseudo')), 0)} sure of "
            f"(weight {_num(section.get('pseudo_weight'), 0.5):g})"
        )
    return ", ".join(parts)


def labels_answer(summary: Mapping[str, object]) -> Rich:
    """The headline sentence on labels; a warning first when pseudo-labels were right less often than the
    model itself (self-confirmation)."""
    lab = summary.get("labels")
    if not isinstance(lab, Mapping):
        return ()
    tot = lab.get("totals", {})
    tot = tot if isinstance(tot, Mapping) else {}
    sec = lab.get("section", {})
    text = f"The devices had partial labels: {describe(sec if isinstance(sec, Mapping) else {})}. "
    text += f"Over the run they trained on {int(_num(tot.get('labels_used'))):,} given labels"
    wrong, pseudo = int(_num(tot.get("labels_wrong"))), int(_num(tot.get("pseudo_used")))
    pa, ma = lab.get("pseudo_accuracy"), lab.get("model_accuracy")
    if wrong:
        text += f" ({wrong:,} of them wrong)"
    if pseudo:
        text += f" and {pseudo:,} pseudo-labels"
        if finite(pa):
            text += f", {pct(pa)} of them right"
    out: list[Span] = [plain(text + ".")]
    if finite(pa, ma) and _num(pa) < _num(ma):
        out = [
            bold(
                f"Pseudo-labels were right less often ({pct(pa)}) than the model itself ({pct(ma)}): the boards "
                "are confirming their own mistakes."
            ),
            plain(" Raise labels.pseudo (a stricter confidence) or lower labels.pseudo_weight. "),
            *out,
        ]
    return tuple(out)


__all__ = ["describe", "labels_answer", "labels_summary"]
