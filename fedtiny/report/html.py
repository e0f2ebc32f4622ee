"""A self-contained report.html (PNGs inlined as base64: open it in a browser, no server) plus the PNGs."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _drift_lines(ax: Any, drift: list[tuple[str, int]]) -> None:
    for g, at in drift:
        if at > 0:
            ax.axvline(at - 0.5, color="red", alpha=0.5, ls="--")
            ax.text(at - 0.4, 0.02, f"drift: {g}", color="red", fontsize=7, transform=ax.get_xaxis_transform())


def plot_groups(curves: dict[str, dict[str, list[float]]], drift: list[tuple[str, int]], path: Path, title: str) -> None:
    plt = _plt()
    groups = list(curves.get("federated", {}))
    n = max(len(groups), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), dpi=100, squeeze=False)
    styles = {"federated": "o-", "local-only": "s--", "static": ":", "personalized": "^-."}
    for ax, g in zip(axes[0], groups):
        for m, st in styles.items():
            if g in curves.get(m, {}):
                acc = curves[m][g]
                ax.plot(range(len(acc)), [100 * a for a in acc], st, ms=3, label=m)
            if g in curves.get(f"{m}@old", {}) and m != "static":
                acc = curves[f"{m}@old"][g]
                ax.plot(range(len(acc)), [100 * a for a in acc], st, ms=2, alpha=0.4, label=f"{m} (old distribution)")
        _drift_lines(ax, [(gg, at) for gg, at in drift if gg == g or g == "all"])
        ax.set_title(f"group: {g}", fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_costs(rows: list[Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4), dpi=100)
    x = [r.round for r in rows[1:]]
    ax[0].plot(x, [r.bytes_up / 1e3 for r in rows[1:]], "o-", ms=3, label="up (device updates)")
    ax[0].plot(x, [r.bytes_down / 1e3 for r in rows[1:]], "s-", ms=3, label="down (head to trainers + redeploy)")
    ax[0].set_ylabel("kB per round")
    ax[0].legend(fontsize=7)
    ax[1].plot(x, [r.energy_j for r in rows[1:]], "o-", ms=3, color="C2")
    ax[1].set_ylabel("fleet energy per round (J)")
    ax[2].plot(x, [r.devices_available for r in rows[1:]], label="available")
    ax[2].plot(x, [r.devices_sampled for r in rows[1:]], label="sampled")
    ax[2].plot(x, [r.devices_trained for r in rows[1:]], label="aggregated")
    ax[2].plot(x, [r.stragglers for r in rows[1:]], label="stragglers dropped")
    ax[2].plot(x, [r.updates_rejected for r in rows[1:]], label="rejected")
    ax[2].set_ylabel("devices")
    ax[2].legend(fontsize=7)
    for a in ax:
        a.set_xlabel("round")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_fleet(out: Path, path: Path) -> None:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100)
    log = out / "device_rounds.npz"
    if log.exists():
        d = np.load(log)
        if len(d["virtual_s"]):
            ax[0].hist(d["virtual_s"], bins=50, color="C0")
            ax[1].hist(1e3 * d["energy_j"], bins=50, color="C2")
    ax[0].set_xlabel("virtual seconds per device-round (compute + link)")
    ax[1].set_xlabel("energy per device-round (mJ)")
    for a in ax:
        a.set_ylabel("device-rounds")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{b64}">'


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "rounds_to_recover" and v is None and "pre_drift" in r:
                v = "never"
            if isinstance(v, float):
                v = f"{100 * v:.1f}%" if c not in ("auc",) else f"{100 * v:.1f}"
            cells.append(f"<td>{html.escape(str('' if v is None else v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_report(plan: Any, summary: dict[str, Any], out: Path, intro: str = "", extra_html: str = "") -> list[str]:
    """Write groups.png, costs.png, fleet.png and report.html; returns the file names. A field trial passes its
    own ``intro`` (no baselines there) and ``extra_html`` (its boards and their failures, shown first)."""
    s = plan.scenario
    rows = plan.server.rows
    curves = plan.server.curves
    drift = [(e.group, e.at) for e in s.drift if e.group != "fleet"]
    title = f"{s.name}: {s.task.name}, {s.fleet.devices} devices, {s.strategy.name}"
    plot_groups(curves, drift, out / "groups.png", title + " (comparison subset)")
    plot_costs(rows, out / "costs.png")
    plot_fleet(out, out / "fleet.png")
    cols = ["group", "method", "pre_drift", "after_drift", "drop", "rounds_to_recover", "auc", "forgetting", "initial", "final"]
    stats = summary.get("fleet_stats", {})
    facts = {
        "rounds": s.rounds, "initial accuracy": f"{100 * summary['initial_accuracy']:.1f}%",
        "final accuracy": f"{100 * summary['final_accuracy']:.1f}%", "updates rejected": summary["updates_rejected"],
        "rejected by reason": json.dumps(summary.get("updates_rejected_reasons", {})),
        "stragglers dropped": summary.get("stragglers", 0), "bytes up": summary["bytes_up"],
        "bytes down": summary["bytes_down"], "energy (J)": summary.get("energy_j", 0),
        "wall seconds": summary["wall_seconds"], **{f"fleet: {k}": v for k, v in stats.items()},
        "device RAM for learning (bytes)": summary["device_budget"]["ram_bytes"],
    }
    fact_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    acc_png = out / "accuracy.png"
    default_intro = f"""{html.escape(title)}; seed {s.seed}; {s.rounds} rounds. Accuracy of the deployed int8 model on
each device's local test data. Baselines (static model, local-only on-device learning) and personalization are
measured on the same seeded subset of {min(s.eval.baseline_devices, s.fleet.devices)} devices; drift markers in red."""
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedtiny report: {html.escape(s.name)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}}
img{{max-width:100%;display:block;margin:1em 0}}</style></head><body>
<h1>fedtiny report: {html.escape(s.name)}</h1>
<p>{html.escape(intro) if intro else default_intro}</p>
{extra_html}<h2>Accuracy over rounds</h2>{_img(acc_png) if acc_png.exists() else ''}
<h2>Per group: federated vs local-only vs static</h2>{_img(out / 'groups.png')}
<h2>Comparison table</h2>
<p>pre_drift: accuracy the round before the drift; drop: pre_drift minus accuracy right after; rounds_to_recover:
rounds until accuracy is back to {int(100 * s.eval.recover)}% of pre_drift; auc: mean accuracy from the drift on;
forgetting: accuracy lost on the group's pre-drift data between the drift and the last round.</p>
{_table(summary.get('comparison', []), cols)}
<h2>Bytes, energy and participation per round</h2>{_img(out / 'costs.png')}
<h2>Fleet statistics</h2>{_img(out / 'fleet.png')}<table>{fact_rows}</table>
</body></html>
"""
    (out / "report.html").write_text(doc)
    return ["report.html", "groups.png", "costs.png", "fleet.png"]
