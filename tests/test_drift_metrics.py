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
    assert {(r["group"], r["method"]) for r in rows} >= {
        ("g", "federated"),
        ("g", "static"),
        ("all", "federated"),
    }
    assert "never" in format_table(rows)


def test_a_drop_under_the_recovery_threshold_is_no_drop_not_a_recovery_in_zero_rounds() -> None:
    m = group_metrics([0.5, 0.8, 0.8, 0.78, 0.78], at=3, recover=0.95)  # static model: 0.78 >= 0.95 * 0.8
    assert m["recovery"] == "no drop" and m["rounds_to_recover"] is None
    assert m["drop"] == 0.02
    rows = comparison(drift_metrics({"static": {"g": [0.5, 0.8, 0.8, 0.78, 0.78]}}, [("g", 3)]), {})
    table = format_table(rows)
    assert "no drop" in table and " 0  " not in table
    assert "80.0%" in table and "2.0 pts" in table  # accuracies read as percentages, drops as points


def test_a_drift_while_still_learning_shows_no_negative_drop() -> None:
    m = group_metrics([0.3, 0.5, 0.6, 0.65, 0.7], at=3, recover=0.95)
    assert m["drop_raw"] == -0.05 and m["drop"] == 0.0 and m["recovery"] == "no drop"


def test_whole_fleet_auc_counts_from_the_drift_on() -> None:
    curves = {"federated": {"all": [0.1, 0.2, 0.9, 0.3, 0.5], "g": [0.1, 0.2, 0.9, 0.3, 0.5]}}
    rows = comparison(drift_metrics(curves, [("g", 3)]), curves)
    whole = next(r for r in rows if r["group"] == "all")
    assert whole["auc_from"] == 3
    curves["federated"]["all"] = [0.1, 0.2, 0.9, 0.3, 0.6]
    whole = next(r for r in comparison(drift_metrics(curves, [("g", 3)]), curves) if r["group"] == "all")
    assert whole["auc"] == 0.45  # all rounds would give 0.42
    no_drift = next(r for r in comparison({}, curves) if r["group"] == "all")
    assert no_drift["auc_from"] == 1 and no_drift["auc"] == 0.5  # without drift: the learning rounds 1..4


def test_two_events_of_one_group_have_their_own_windows_and_one_old_distribution() -> None:
    acc = [0.5, 0.8, 0.6, 0.75, 0.5, 0.7, 0.8]
    old = [0.5, 0.8, 0.79, 0.78, 0.7, 0.65, 0.6]  # the group's data before its first event (at 2)
    curves = {"federated": {"g": acc, "all": acc}, "federated@old": {"g": old}}
    m = drift_metrics(curves, [("g", 2), ("g", 4)])
    assert set(m) == {"g", "g@4"}
    first, second = m["g"]["federated"], m["g@4"]["federated"]
    assert (first["at"], first["end"], second["at"], second["end"]) == (2, 3, 4, 6)
    assert first["pre_drift"] == 0.8 and second["pre_drift"] == 0.75
    assert first["auc"] == round((0.6 + 0.75) / 2, 4) and first["recovered_accuracy"] == 0.75
    assert first["old_pre_drift"] == second["old_pre_drift"] == 0.8  # round 1: before the group's first event
    assert first["forgetting"] == 0.2 and first["group"] == second["group"] == "g"


def test_comparisons_say_when_a_difference_is_within_noise() -> None:
    n = 5
    curves = {
        "federated": {"g": [0.5, 0.8, 0.6, 0.75, 0.80], "all": [0.5] * n},
        "local-only": {"g": [0.5, 0.8, 0.6, 0.74, 0.79], "all": [0.5] * n},
        "static": {"g": [0.5, 0.8, 0.5, 0.5, 0.50], "all": [0.5] * n},
        "local-only_diff_se": {"g": [0.01] * n, "all": [0.01] * n},
        "static_diff_se": {"g": [0.01] * n, "all": [0.01] * n},
        "federated_se": {"g": [0.02] * n, "all": [0.02] * n},
        "federated_lo": {"g": [0.4] * n},
        "federated_hi": {"g": [0.9] * n},
    }
    rows = {(r["group"], r["method"]): r for r in comparison(drift_metrics(curves, [("g", 2)]), curves)}
    assert rows[("g", "local-only")]["final_within_noise"] is True
    assert (
        rows[("g", "static")]["final_within_noise"] is False
        and rows[("g", "static")]["final_diff_vs_federated"] == 0.3
    )
    fed = rows[("g", "federated")]
    assert fed["pre_drift_lo"] == 0.4 and fed["final_hi"] == 0.9 and fed["drop_se"] == round(0.02 * 2**0.5, 4)
    assert (
        fed["auc_lo"] == round(fed["auc"] - 1.96 * 0.02, 4)
        or abs(fed["auc_lo"] - (fed["auc"] - 1.96 * 0.02)) < 1e-3
    )
