"""What labels the devices had, for the report's headline (docs/labels.md): the section in words, what the
devices trained on over the run, and the warning when the boards' own labels are worse than their model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedtiny.report.words import Rich, bold, finite, pct, plain


def labels_summary(
    section: Mapping[str, Any], rows_labels: list[dict[str, int]], model_accuracy: float
) -> dict[str, Any]:
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


def describe(section: Mapping[str, Any]) -> str:
    """The label section in words: '10% of samples labelled, 2 rounds late, 5% wrong, pseudo-labels ...'."""
    parts = [f"{pct(section.get('fraction', 1.0), 0)} of samples labelled"]
    if section.get("delay_rounds"):
        d = int(section["delay_rounds"])
        parts.append(f"{d} round{'s' if d != 1 else ''} late")
    if section.get("noise"):
        parts.append(f"{pct(section['noise'], 1)} of labels wrong")
    if section.get("noise_matrix"):
        parts.append("labels confused as the noise matrix says")
    if section.get("budget_per_round"):
        parts.append(f"at most {int(section['budget_per_round'])} labels per device per round")
    if section.get("pseudo"):
        parts.append(
            f"boards pseudo-labelling samples they were at least {pct(section['pseudo'], 0)} sure of "
            f"(weight {float(section.get('pseudo_weight', 0.5)):g})"
        )
    return ", ".join(parts)


def labels_answer(summary: Mapping[str, Any]) -> Rich:
    """The headline sentence on labels; a warning first when pseudo-labels were right less often than the
    model itself (self-confirmation)."""
    lab = summary.get("labels")
    if not isinstance(lab, Mapping):
        return ()
    tot = lab.get("totals", {})
    text = (
        f"The devices had partial labels: {describe(lab.get('section', {}))}. Over the run they trained on "
    )
    text += f"{int(tot.get('labels_used', 0)):,} given labels"
    if tot.get("labels_wrong"):
        text += f" ({int(tot['labels_wrong']):,} of them wrong)"
    if tot.get("pseudo_used"):
        text += f" and {int(tot['pseudo_used']):,} pseudo-labels"
        if finite(lab.get("pseudo_accuracy")):
            text += f", {pct(lab['pseudo_accuracy'])} of them right"
    out: list[Any] = [plain(text + ".")]
    pa, ma = lab.get("pseudo_accuracy"), lab.get("model_accuracy")
    if finite(pa, ma) and pa < ma:
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
