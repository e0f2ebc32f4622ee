"""Results that read right (issue 19 §4): learning that hurt is said first, a falling curve is never told to
run longer, the console's comparison table and lines fit 80 columns."""

from __future__ import annotations

from typing import Any

from fedtiny.report.drift import format_table
from fedtiny.report.verdict import falling, learning_hurt


def _summary(fed_all: float, static_all: float, noise: bool) -> dict[str, Any]:
    rows = [
        {"event": "all", "method": "federated", "final": fed_all},
        {"event": "all", "method": "static", "final": static_all, "final_within_noise": noise},
        {"event": "g", "method": "federated", "final": 0.439, "pre_drift": 0.833, "drop": 0.227, "auc": 0.5},
        {"event": "g", "method": "static", "final": 0.606, "final_within_noise": False, "pre_drift": 0.833},
        {"event": "g", "method": "local-only", "final": 0.40, "final_within_noise": False, "pre_drift": 0.8},
    ]
    return {"final_accuracy": fed_all, "comparison": rows}


def test_learning_that_ends_below_a_baseline_beyond_noise_is_found_fleet_first() -> None:
    hurts = learning_hurt(_summary(0.773, 0.807, noise=False))
    assert [(h.scope, h.method) for h in hurts] == [("all", "static"), ("g", "static")]
    assert hurts[0].text().startswith("Learning hurt on the whole fleet: federated learning ends at 77.3%")
    assert "group “g”" in hurts[1].text()
    # within noise, or federated above: nothing to say
    assert [h.scope for h in learning_hurt(_summary(0.773, 0.807, noise=True))] == ["g"]
    assert [h.scope for h in learning_hurt(_summary(0.85, 0.807, noise=False))] == ["g"]


def test_a_curve_that_keeps_falling_after_the_drift_is_told_apart() -> None:
    assert falling({"after_drift": 0.606, "recovered_accuracy": 0.439, "drop_se": 0.03})
    assert not falling({"after_drift": 0.606, "recovered_accuracy": 0.62, "drop_se": 0.03})
    assert not falling({"after_drift": 0.606, "recovered_accuracy": 0.58, "drop_se": 0.03})  # within 2 SE


def test_the_comparison_table_fits_80_columns() -> None:
    rows = [
        {"event": "remounted", "method": m, "pre_drift": 0.788, "drop": 0.183, "recovery": "never",
         "rounds_to_recover": None, "auc": 0.606, "forgetting": -0.033, "final": 0.607, "final_within_noise": n}
        for m, n in (("federated", None), ("local-only", True), ("static", False))
    ]  # fmt: skip
    table = format_table(rows)
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "60.7%~" in table and "never" in table and "-3.3 pts" in table
