"""Drift metrics: pre-drift accuracy, drop, rounds to recover, area under the curve, forgetting."""

from __future__ import annotations

from fedtiny.report.drift import comparison, drift_metrics, format_table, group_metrics


def test_group_metrics_on_a_known_curve() -> None:
    acc = [0.5, 0.8, 0.9, 0.5, 0.7, 0.86, 0.9]
    old = [0.5, 0.8, 0.9, 0.88, 0.85, 0.8, 0.7]
    m = group_metrics(acc, at=3, recover=0.95, old=old)
    assert m["pre_drift"] == 0.9 and m["drop"] == 0.4 and m["trough"] == 0.5
    assert m["rounds_to_recover"] == 2  # 0.86 >= 0.95 * 0.9 at round 5
    assert m["auc"] == round((0.5 + 0.7 + 0.86 + 0.9) / 4, 4)
    assert m["forgetting"] == 0.2 and m["final"] == 0.9


def test_never_recovering_is_reported_as_none_and_table_lists_methods() -> None:
    curves = {
        "federated": {"all": [0.5, 0.9, 0.6, 0.9], "g": [0.5, 0.9, 0.6, 0.9]},
        "static": {"all": [0.5, 0.5, 0.3, 0.3], "g": [0.5, 0.5, 0.3, 0.3]},
    }
    m = drift_metrics(curves, [("g", 2)])
    assert m["g"]["federated"]["rounds_to_recover"] == 1 and m["g"]["static"]["rounds_to_recover"] is None
    rows = comparison(m, curves)
    assert {(r["group"], r["method"]) for r in rows} >= {("g", "federated"), ("g", "static"), ("all", "federated")}
    assert "never" in format_table(rows)
