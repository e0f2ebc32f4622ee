"""Result files a user opens: rounds.csv (one row per round), summary.json, a PNG of accuracy over rounds."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedtiny.summary import AccuracyIntervals, EvaluationInfo


@dataclass
class RoundRow:
    """One round. Every accuracy ``X`` measured on sampled test data has its 95% interval in ``X_lo``/``X_hi``
    (docs/drift-events.md, "Uncertainty"); ``rounds.csv`` puts them right after ``X``."""

    round: int
    segment: int
    accuracy: float  # deployed int8 model on the devices' local test data (pooled)
    accuracy_global: float  # deployed int8 model on the clean factory test set
    loss: float  # mean local training loss of the round's devices (nan at round 0)
    devices_trained: int
    updates_rejected: int
    gateways_failed: int
    bytes_down: int
    bytes_up: int
    wall_s: float
    devices_available: int = 0  # awake (duty cycle) with enough battery
    devices_sampled: int = 0
    stragglers: int = 0
    virtual_s: float = 0.0  # virtual duration of the round (slowest on-time device, or the deadline)
    energy_j: float = 0.0  # fleet energy for learning this round (training devices + redeploy radio)
    energy_mj_per_trainer: float = 0.0
    accuracy_static: float = float("nan")
    accuracy_local: float = float("nan")
    accuracy_personalized: float = float("nan")
    group_accuracy: dict[str, float] = field(default_factory=dict)
    devices_dropped: int = 0  # sampled, started the round, never finished it (fleet.dropout)
    accuracy_lo: float = float("nan")
    accuracy_hi: float = float("nan")
    accuracy_global_lo: float = float("nan")
    accuracy_global_hi: float = float("nan")
    accuracy_static_lo: float = float("nan")
    accuracy_static_hi: float = float("nan")
    accuracy_local_lo: float = float("nan")
    accuracy_local_hi: float = float("nan")
    accuracy_personalized_lo: float = float("nan")
    accuracy_personalized_hi: float = float("nan")
    group_accuracy_lo: dict[str, float] = field(default_factory=dict)
    group_accuracy_hi: dict[str, float] = field(default_factory=dict)
    # what the round's trainers trained on when labels are partial (fedtiny/fleet/labels.py COUNT_NAMES; empty
    # when every sample is labelled, and then no column is written)
    labels: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, int | float]:
        """CSV columns: ``accuracy_<group>`` per group; every ``X_lo``/``X_hi`` right after its ``X`` (left out
        where ``X`` itself is not measured, NaN: a baseline that did not run)."""
        d = asdict(self)
        groups, glo, ghi = d.pop("group_accuracy"), d.pop("group_accuracy_lo"), d.pop("group_accuracy_hi")
        labels = d.pop("labels")
        nan = float("nan")
        for g, v in groups.items():
            d[f"accuracy_{g}"] = v
            d[f"accuracy_{g}_lo"] = glo.get(g, nan)
            d[f"accuracy_{g}_hi"] = ghi.get(g, nan)
        bounds = {k for k in d if k.endswith(("_lo", "_hi")) and k[:-3] in d}
        out: dict[str, int | float] = {}
        for k, v in d.items():
            if k in bounds:
                continue
            out[k] = v
            for b in ("_lo", "_hi"):
                if k + b in bounds and not (isinstance(v, float) and math.isnan(v)):
                    out[k + b] = d[k + b]
        if labels:
            for k in ("labels_used", "labels_late", "labels_wrong", "pseudo_used"):
                out[k] = int(labels.get(k, 0))
            checked = int(labels.get("pseudo_checked", 0))
            out["pseudo_accuracy"] = labels.get("pseudo_correct", 0) / checked if checked else float("nan")
        return out


def write_rounds_csv(rows: list[RoundRow], path: Path) -> None:
    flat = [r.flat() for r in rows]
    keys = list(dict.fromkeys(k for row in flat for k in row))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in flat:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_summary(summary: Mapping[str, object], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")


def plot_accuracy(
    rows: list[RoundRow],
    path: Path,
    title: str,
    drift_rounds: list[int],
    global_label: str = "clean factory test set",
) -> None:
    """Accuracy over rounds: the fleet's devices (with its 95% band), ``global_label`` (the clean factory test set,
    or for recorded data the devices' examples in the base condition), each group; integer rounds, y 0-100%,
    the legend below the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110, layout="constrained")
    x = [r.round for r in rows]
    lo, hi = [r.accuracy_lo for r in rows], [r.accuracy_hi for r in rows]
    if rows and all(math.isfinite(v) for v in lo + hi):
        ax.fill_between(
            x,
            [100 * v for v in lo],
            [100 * v for v in hi],
            color="#1f77b4",
            alpha=0.15,
            lw=0,
            label="95% interval",
        )
    ax.plot(
        x,
        [100 * r.accuracy for r in rows],
        "o-",
        color="#1f77b4",
        ms=4,
        lw=2,
        label="all devices, their own test data",
    )
    ax.plot(
        x, [100 * r.accuracy_global for r in rows], "s--", color="#555555", ms=3, lw=1.3, label=global_label
    )
    groups = list(rows[0].group_accuracy) if rows else []
    if len(groups) > 1:
        for i, g in enumerate(groups):
            ax.plot(
                x,
                [100 * r.group_accuracy.get(g, float("nan")) for r in rows],
                ":",
                lw=1.5,
                color=("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")[i % 5],
                label=f"group {g}",
            )
    for j, dr in enumerate(d for d in drift_rounds if d > 0):
        ax.axvline(
            dr - 0.5, color="#d62728", alpha=0.6, ls="--", lw=1, label="drift event" if j == 0 else None
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=2))
    ax.set_xlim(-0.3, max(x[-1] if x else 1, 1) + 0.3)
    ax.set_ylim(0, 100)
    ax.set_xlabel("round (0 = base model before federated learning)")
    ax.set_ylabel("accuracy of the deployed int8 model (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def accuracy_intervals(rows: list[RoundRow]) -> AccuracyIntervals:
    """summary.json: the 95% intervals of its initial/final accuracies, overall and per group."""
    if not rows:
        return {}
    a, z = rows[0], rows[-1]
    return {
        "initial_accuracy_lo": a.accuracy_lo,
        "initial_accuracy_hi": a.accuracy_hi,
        "final_accuracy_lo": z.accuracy_lo,
        "final_accuracy_hi": z.accuracy_hi,
        "final_accuracy_global_lo": z.accuracy_global_lo,
        "final_accuracy_global_hi": z.accuracy_global_hi,
        "group_accuracy_initial_lo": a.group_accuracy_lo,
        "group_accuracy_initial_hi": a.group_accuracy_hi,
        "group_accuracy_final_lo": z.group_accuracy_lo,
        "group_accuracy_final_hi": z.group_accuracy_hi,
    }


def evaluation_info(fleet_dir: Path, test_samples: int, comparison_devices: int) -> EvaluationInfo:
    """summary.json ``evaluation``: what the accuracies are measured on and how their intervals are made."""
    import numpy as np

    meta = json.loads((fleet_dir / "layout.json").read_text())
    shape = np.load(fleet_dir / "pool_feats.npy", mmap_mode="r").shape
    interval = (
        "95%: two-way cluster-robust over devices and test samples, Wilson at the effective sample "
        "size (docs/drift-events.md, Uncertainty)"
    )
    samples, variants = int(meta.get("test", test_samples)), int(shape[0])
    if len(shape) == 4:  # generated: a held-out part of every (condition, class) pool, shared by all devices
        p = int(shape[2])
        held = max(1, p // 4) if p > 1 else 1
        return {
            "interval": interval,
            "test_samples_per_device": samples,
            "comparison_devices": comparison_devices,
            "condition_variants": variants,
            "classes": int(shape[1]),
            "held_out_per_condition_class": held,
            "note": f"every device's test samples are drawn from the same {held} held-out samples per (condition "
            f"variant, class) (the last quarter of fleet.pool_per_class = {p}), so devices share test "
            f"samples: absolute accuracies carry the uncertainty of that pool, which the intervals include; "
            f"raise fleet.pool_per_class to narrow them",
        }
    return {  # recorded: every device tests on its own latest examples
        "interval": interval,
        "test_samples_per_device": samples,
        "comparison_devices": comparison_devices,
        "condition_variants": variants,
        "note": "every device tests on its own latest recorded examples (no sharing between devices)",
    }
