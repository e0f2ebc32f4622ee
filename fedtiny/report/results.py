"""Result files a user opens: rounds.csv (one row per round), summary.json, a PNG of accuracy over rounds."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RoundRow:
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
    devices_available: int = 0
    devices_sampled: int = 0
    stragglers: int = 0
    virtual_s: float = 0.0  # virtual duration of the round (slowest on-time device, or the deadline)
    energy_j: float = 0.0  # fleet energy for learning this round (training devices + redeploy radio)
    energy_mj_per_trainer: float = 0.0
    accuracy_static: float = float("nan")
    accuracy_local: float = float("nan")
    accuracy_personalized: float = float("nan")
    group_accuracy: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        d = asdict(self)
        groups = d.pop("group_accuracy")
        d.update({f"accuracy_{g}": v for g, v in groups.items()})
        return d


def write_rounds_csv(rows: list[RoundRow], path: Path) -> None:
    flat = [r.flat() for r in rows]
    keys = list(dict.fromkeys(k for row in flat for k in row))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in flat:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")


def plot_accuracy(rows: list[RoundRow], path: Path, title: str, drift_rounds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    x = [r.round for r in rows]
    ax.plot(x, [100 * r.accuracy for r in rows], "o-", label="devices (local test data)", lw=2)
    ax.plot(x, [100 * r.accuracy_global for r in rows], "s--", label="clean factory test set", lw=1.5)
    for g in rows[0].group_accuracy if rows else []:
        if len(rows[0].group_accuracy) > 1:
            ax.plot(x, [100 * r.group_accuracy.get(g, float("nan")) for r in rows], ":", label=f"group {g}")
    for dr in drift_rounds:
        if dr > 0:
            ax.axvline(dr - 0.5, color="red", alpha=0.5, ls="--")
            ax.text(dr - 0.4, ax.get_ylim()[0] + 2, "drift", color="red", fontsize=8)
    ax.set_xlabel("round (0 = base model before federated learning)")
    ax.set_ylabel("accuracy of the deployed int8 model (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
