"""A self-contained report.html (PNGs inlined as base64: open it in a browser, no server) plus the PNGs.

The report opens with a headline that answers the run's question in numbers with their 95% intervals (what
each drift cost, whether and how fast federated learning won it back, against local-only learning and the
static model) and what to try next; then the plots, the comparison table and the fleet's facts. Every method
has one colour and line style in every plot (:data:`METHOD_STYLE`); legends sit outside the axes.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from fedtiny.report.inference_html import inference_table_html

#: one colour, line style and marker per method, in every panel and every plot
METHOD_STYLE: dict[str, dict[str, Any]] = {
    "federated": {"color": "#1f77b4", "ls": "-", "marker": "o", "label": "federated (one shared int8 head)"},
    "local-only": {
        "color": "#ff7f0e",
        "ls": "--",
        "marker": "s",
        "label": "local-only (each device learns alone)",
    },
    "static": {"color": "#7f7f7f", "ls": ":", "marker": "", "label": "static (base model, no learning)"},
    "personalized": {
        "color": "#2ca02c",
        "ls": "-.",
        "marker": "^",
        "label": "personalized (local + shared head)",
    },
}
DRIFT_COLOR = "#d62728"
METHOD_NAMES = {
    "federated": "federated learning",
    "local-only": "local-only learning",
    "static": "the static model",
    "personalized": "personalized heads",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(*v: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def pct(v: Any, digits: int = 1) -> str:
    """0.7881 -> '78.8%'; '-' when missing."""
    return f"{100 * v:.{digits}f}%" if _finite(v) else "-"


def pct_ci(v: Any, lo: Any = None, hi: Any = None) -> str:
    """'78.8% (74.2–82.8)': the value and its 95% interval in percent, where the interval is known."""
    if not _finite(v):
        return "-"
    return f"{pct(v)} ({100 * lo:.1f}–{100 * hi:.1f})" if _finite(lo, hi) else pct(v)


def pts(v: Any) -> str:
    """A difference of accuracies in percentage points: 0.181 -> '18.1 pts'."""
    return f"{100 * v:.1f} pts" if _finite(v) else "-"


def round_axis(ax: Any, last: int) -> None:
    """Integer round ticks from 0 to ``last``."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=2))
    ax.set_xlim(-0.3, max(last, 1) + 0.3)
    ax.set_xlabel("round")


def from_zero(ax: Any, values: list[float], integer: bool = False) -> None:
    """A y-axis from 0 to a little above the largest value, without an offset: a flat line stays flat."""
    from matplotlib.ticker import MaxNLocator

    top = max([v for v in values if _finite(v)], default=0.0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def _drift_lines(ax: Any, drift: list[tuple[str, int]]) -> None:
    for _g, at in drift:
        if at > 0:
            ax.axvline(at - 0.5, color=DRIFT_COLOR, alpha=0.6, ls="--", lw=1)


def _shared_legend(fig: Any, axes: list[Any], ncol: int = 3) -> None:
    """One legend for every panel, below them (covers no data): the union of the panels' entries."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(ncol, len(handles)),
            fontsize=8,
            frameon=False,
        )


def plot_groups(
    curves: dict[str, dict[str, list[float]]],
    drift: list[tuple[str, int]],
    path: Path,
    title: str,
    sizes: dict[str, int] | None = None,
) -> None:
    """One panel per group (``all`` first): every method's accuracy with its 95% band, the drifted group's
    accuracy on its pre-drift data (thin), drift markers; y from 0 to 100% in every panel; one legend."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fed = curves.get("federated", {})
    groups = [g for g in fed if g == "all" or fed[g] != fed.get("all")]  # a single group is the "all" panel
    n = max(len(groups), 1)
    fig, axes = plt.subplots(
        1,
        n,
        figsize=(max(4.2 * n, 8.5), 4.0 if n > 1 else 4.6),
        dpi=100,
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    last = max((len(c) - 1 for m in METHOD_STYLE for c in curves.get(m, {}).values()), default=1)
    for ax, g in zip(axes[0], groups):
        for m, st in METHOD_STYLE.items():
            acc = curves.get(m, {}).get(g)
            if acc:
                x = list(range(len(acc)))
                lo, hi = curves.get(f"{m}_lo", {}).get(g), curves.get(f"{m}_hi", {}).get(g)
                if lo and hi and len(lo) == len(acc) == len(hi):
                    ax.fill_between(
                        x, [100 * v for v in lo], [100 * v for v in hi], color=st["color"], alpha=0.12, lw=0
                    )
                ax.plot(
                    x,
                    [100 * a for a in acc],
                    color=st["color"],
                    ls=st["ls"],
                    marker=st["marker"] or None,
                    ms=3,
                    lw=1.6,
                    label=st["label"],
                )
            old = curves.get(f"{m}@old", {}).get(g)
            if old and m != "static":
                ax.plot(
                    range(len(old)),
                    [100 * a for a in old],
                    color=st["color"],
                    ls=st["ls"],
                    lw=0.9,
                    alpha=0.45,
                    label=f"{m} on the group's pre-drift data",
                )
        _drift_lines(ax, [(gg, at) for gg, at in drift if gg == g or g == "all"])
        size = (sizes or {}).get(g)
        name = "all devices" if g == "all" else f"group {g}"
        ax.set_title(f"{name} ({size} devices)" if size else name, fontsize=9)
        round_axis(ax, last)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), comparison subset")
    if any(at > 0 for _, at in drift):
        axes[0][0].add_line(Line2D([], [], color=DRIFT_COLOR, ls="--", lw=1, label="drift event"))
    _shared_legend(fig, list(axes[0]), ncol=3 if n > 1 else 2)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def plot_costs(rows: list[Any], path: Path) -> None:
    """Bytes, energy and participation per round; y-axes from 0 (a constant stays a flat line)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.9), dpi=100, layout="constrained")
    data = rows[1:]
    x = [r.round for r in data]
    last = x[-1] if x else 1
    up, down = [r.bytes_up / 1e3 for r in data], [r.bytes_down / 1e3 for r in data]
    ax[0].plot(x, up, "o-", ms=3, color="#9467bd", label="up: device updates")
    ax[0].plot(x, down, "s-", ms=3, color="#8c564b", label="down: head to trainers + redeploy")
    ax[0].set_ylabel("kB per round")
    from_zero(ax[0], up + down)
    energy = [r.energy_j for r in data]
    unit, scale = ("mJ", 1e3) if max(energy, default=0.0) < 1 else ("J", 1.0)
    energy = [scale * e for e in energy]
    ax[1].plot(x, energy, "o-", ms=3, color="#17becf", label="fleet energy for learning")
    ax[1].set_ylabel(f"{unit} per round")
    from_zero(ax[1], energy)
    series = [
        ("devices_available", "awake", "#7f7f7f"),
        ("devices_sampled", "sampled", "#bcbd22"),
        ("devices_trained", "aggregated", "#1f77b4"),
        ("stragglers", "stragglers (deadline)", "#ff7f0e"),
        ("devices_dropped", "dropped out", "#e377c2"),
        ("updates_rejected", "rejected", "#d62728"),
    ]
    counts: list[float] = []
    for key, label, color in series:
        ys = [float(getattr(r, key, 0) or 0) for r in data]
        if key == "devices_trained" or any(ys):  # a count that is zero in every round is said in the title
            wide = key in (
                "devices_available",
                "devices_sampled",
            )  # drawn wide and light: lines on top stay visible
            ax[2].plot(
                x,
                ys,
                "-" if wide else "o-",
                ms=2.5,
                color=color,
                label=label,
                lw=5 if wide else 1.5,
                alpha=0.45 if wide else 1.0,
            )
            counts += ys
    zero = [
        label
        for key, label, _ in series
        if key != "devices_trained" and not any(getattr(r, key, 0) for r in data)
    ]
    ax[2].set_title("zero in every round: " + ", ".join(zero) if zero else "", fontsize=8, loc="left")
    ax[2].set_ylabel("devices per round")
    from_zero(ax[2], counts, integer=True)
    for a in ax:
        round_axis(a, last)
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def plot_fleet(out: Path, path: Path) -> None:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100, layout="constrained")
    log = out / "device_rounds.npz"
    if log.exists():
        d = np.load(log)
        if len(d["virtual_s"]):
            ax[0].hist(d["virtual_s"], bins=50, color="#1f77b4")
            ax[1].hist(1e3 * d["energy_j"], bins=50, color="#17becf")
    ax[0].set_xlabel("virtual seconds per device-round (compute + link)")
    ax[1].set_xlabel("energy per device-round (mJ)")
    from matplotlib.ticker import MaxNLocator

    for a in ax:
        a.set_ylabel("device-rounds")
        a.ticklabel_format(axis="x", useOffset=False, style="plain")
        a.xaxis.set_major_locator(MaxNLocator(nbins=5))  # long plain labels must not overlap
        a.grid(alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{b64}">'


# -- words ------------------------------------------------------------------------------------------
def _knobs(cond: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in cond.items())


def _event_text(s: Any, group: str, at: int, size: int | None) -> str:
    """'At round 6 the 7 devices of group “remounted” drifted (resonance_hz 3500, noise 0.1)'."""
    ev = next((e for e in s.drift if e.group == group and e.at == at), None)
    what = ""
    if ev is not None:
        if ev.kind == "condition" and ev.condition:
            what = f" ({_knobs(ev.condition)})"
        elif ev.kind == "label_shift":
            what = " (a new class mix)"
        elif ev.kind == "new_class":
            what = f" (classes {', '.join(map(str, ev.classes))} appear)"
    devices = f"the {size} devices of group “{group}”" if size else f"group “{group}”"
    return f"At round {at}, {devices} drifted{what}"


def _comparison_row(summary: dict[str, Any], event: str, method: str) -> dict[str, Any]:
    return next(
        (
            r
            for r in summary.get("comparison", [])
            if r.get("event", r.get("group")) == event and r.get("method") == method
        ),
        {},
    )


def _method_outcome(summary: dict[str, Any], event: str, m: str, v: dict[str, Any]) -> str:
    """'local-only learning 45.0% (40.1–50.2), below federated' for the end of the event's window."""
    out = f"{METHOD_NAMES.get(m, m)} {pct_ci(v.get('recovered_accuracy'), v.get('recovered_accuracy_lo'), v.get('recovered_accuracy_hi'))}"
    row = _comparison_row(summary, event, m)
    if row.get("final_within_noise") is True:
        out += " (within noise of federated)"
    return out


def _event_headline(
    s: Any, summary: dict[str, Any], event: str, per: dict[str, Any], sizes: dict[str, int]
) -> str:
    fed = per.get("federated")
    if not fed:
        return ""
    group, at, end = fed.get("group", event), int(fed["at"]), int(fed.get("end", fed["at"]))
    seen = end - at + 1
    text = _event_text(s, group, at, sizes.get(group)) + ". "
    before = pct_ci(fed.get("pre_drift"), fed.get("pre_drift_lo"), fed.get("pre_drift_hi"))
    right_after = pct_ci(fed.get("after_drift"), fed.get("after_drift_lo"), fed.get("after_drift_hi"))
    at_end = pct_ci(
        fed.get("recovered_accuracy"), fed.get("recovered_accuracy_lo"), fed.get("recovered_accuracy_hi")
    )
    rec = fed.get("recovery")
    if rec == "recovered":
        k = fed.get("rounds_to_recover")
        text += (
            f"Federated learning fell from {before} to {right_after} and <b>recovered in {k} round{'s' if k != 1 else ''}"
            f"</b> (back to {int(100 * s.eval.recover)}% of its pre-drift accuracy); at round {end} it is at {at_end}. "
        )
    elif rec == "no drop":
        text += (
            f"It cost federated learning less than {100 - int(100 * s.eval.recover)}%: {before} before, {right_after} "
            f"right after; at round {end} it is at <b>{at_end}</b>. "
        )
    else:
        text += (
            f"Federated learning fell from {before} to {right_after} and is at <b>{at_end} at round {end}</b>: "
            f"<b>not back</b> to {int(100 * s.eval.recover)}% of its pre-drift accuracy in the {seen} round"
            f"{'s' if seen != 1 else ''} after the drift. "
        )
    others = [_method_outcome(summary, event, m, v) for m, v in per.items() if m != "federated"]
    if others:
        text += f"At round {end}: " + "; ".join(others) + "."
    return text


def _fleet_headline(summary: dict[str, Any], rounds_done: int) -> str:
    a, z = summary.get("initial_accuracy"), summary.get("final_accuracy")
    if not _finite(a, z):
        return ""
    text = (
        f"On the whole fleet, the deployed int8 model went from "
        f"{pct_ci(a, summary.get('initial_accuracy_lo'), summary.get('initial_accuracy_hi'))} to "
        f"<b>{pct_ci(z, summary.get('final_accuracy_lo'), summary.get('final_accuracy_hi'))}</b> on the devices' "
        f"own test data in {rounds_done} round{'s' if rounds_done != 1 else ''}"
    )
    others = []
    for m in ("local-only", "static", "personalized"):
        row = _comparison_row(summary, "all", m)
        if row and _finite(row.get("final")):
            noise = " (within noise of federated)" if row.get("final_within_noise") is True else ""
            others.append(
                f"{METHOD_NAMES[m]} {pct_ci(row['final'], row.get('final_lo'), row.get('final_hi'))}{noise}"
            )
    text += ("; " + ", ".join(others) if others else "") + "."
    central = summary.get("base_model", {}).get("central_head_accuracy")
    if _finite(central):
        text += (
            f" For reference, a head re-trained centrally on all the devices' earlier examples (what pooling the raw "
            f"data would give) reaches {pct(central)}."
        )
    loc = _comparison_row(summary, "all", "local-only")
    if _finite(loc.get("final")) and loc.get("final_within_noise") is False and loc["final"] > z:
        text += " <b>Local-only learning ends higher than the shared head</b>, beyond noise."
    return text


def _points(curve: Any) -> list[tuple[int, float]]:
    """(round, value) of a curve's finite values (baselines are evaluated on some rounds only)."""
    return [(r, float(v)) for r, v in enumerate(curve or []) if _finite(v)]


def _at(points: list[tuple[int, float]], r: int) -> float:
    """The value at the last evaluated round at or before ``r`` (the first point when none is)."""
    before = [v for q, v in points if q <= r]
    return before[-1] if before else points[0][1]


def recipe_advice(s: Any, curves: dict[str, dict[str, list[float]]] | None) -> str:
    """A concrete strategy change (as ``--set`` arguments) when the fleet's federated curve is still rising at
    the last round, or rises much slower than local-only learning; "" otherwise.

    Still rising: it gained more than two standard errors (one point without them) over its last quarter of
    rounds (at least 2). Much slower: by the middle round local-only learning gained more than 2 points and
    federated learning less than half of what local-only gained."""
    if not curves:
        return ""
    fed = _points(curves.get("federated", {}).get("all"))
    if len(fed) < 4:
        return ""
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
        return ""
    name = str(s.strategy.name).lower()
    lr = float(s.train.lr)
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        cur = float(s.strategy.server_lr) or 0.1  # Flower's eta default
        change = f"--set strategy.server_lr={3 * cur:g}"
        what = f"a larger server step for {name} (server_lr {cur:g} now)"
    elif name in ("fedavg", "fedavgm", "fedprox"):
        change = "--set strategy.name=fedadam --set strategy.server_lr=0.03"
        what = "a server optimizer, which takes larger steps where the devices' updates agree"
    else:
        change = f"--set train.lr={2 * lr:g}"
        what = "larger on-device steps"
    longer = 2 * int(s.rounds)
    return (
        f"{why[0][0].upper() + why[0][1:]}{'; ' + why[1] if len(why) > 1 else ''}: try {what}: "
        f"<code>{change}</code> (<code>fedtiny init</code> probes such recipes on your data), or run longer "
        f"(<code>--set rounds={longer}</code>)."
    )


def _suggestions(
    s: Any, summary: dict[str, Any], curves: dict[str, dict[str, list[float]]] | None = None
) -> list[str]:
    """What to try next, from what the numbers show."""
    tips: list[str] = []
    advice = recipe_advice(s, curves)
    if advice:
        tips.append(advice)
    done = int(summary.get("rounds_done", s.rounds))
    drift = summary.get("drift", {})
    feds = [per["federated"] for per in drift.values() if "federated" in per]
    not_back = [f for f in feds if f.get("recovery") == "never"]
    if not summary.get("complete", True):
        tips.append(
            f"Finish the run: <code>fedtiny run --resume {html.escape(str(summary.get('out_dir', 'DIR')))}</code>."
        )
    if not_back:
        f = not_back[0]
        seen = int(f.get("end", done)) - int(f["at"]) + 1
        longer = max(2 * s.rounds, int(f["at"]) + 20)
        tips.append(
            f"Federated learning did not win the drifted group back in the {seen} rounds after its drift: run longer "
            f"(<code>--set rounds={longer}</code>) to see whether it does."
        )
        fed_all = _comparison_row(summary, "all", "federated")
        grp = f.get("group", "")
        loc = drift.get(grp, {}).get("local-only", {})
        if (
            _finite(loc.get("recovered_accuracy"), f.get("recovered_accuracy"))
            and loc["recovered_accuracy"] > f["recovered_accuracy"]
        ):
            tips.append(
                "Local-only learning does better on the drifted group than the shared head: blend a local head into "
                "it with <code>--set strategy.personalize=0.5</code>."
            )
        elif fed_all:
            tips.append(
                "The shared head serves the whole fleet, where the drifted group is a minority: compare per-device "
                "heads (<code>--set strategy.personalize=0.5</code>) or more local training "
                "(<code>--set train.epochs=4</code>)."
            )
    loc_all, fed_all = (
        _comparison_row(summary, "all", "local-only"),
        _comparison_row(summary, "all", "federated"),
    )
    if loc_all and fed_all and _finite(loc_all.get("final"), fed_all.get("final")):
        if (
            loc_all["final"] > fed_all["final"]
            and loc_all.get("final_within_noise") is False
            and not not_back
        ):
            tips.append(
                "Each device learning alone beats the shared head: the devices differ more than one head can "
                "serve. Blend a local head into the shared one (<code>--set strategy.personalize=0.5</code>) "
                "and compare."
            )
        elif loc_all.get("final_within_noise") is True:
            tips.append(
                "Federated and local-only learning end within noise of each other on the fleet: more rounds or more "
                "devices per round (<code>--set strategy.fraction=1.0</code>) would separate them."
            )
        elif fed_all["final"] > loc_all["final"] and not not_back:
            tips.append(
                "Federated learning beats learning alone here: try a robust aggregator against faulty devices "
                "(<code>--set strategy.name=median</code>) or the int8 uplink (<code>--set strategy.uplink=int8</code>) "
                "to cut bytes."
            )
    widths = [
        r["final_hi"] - r["final_lo"]
        for r in summary.get("comparison", [])
        if _finite(r.get("final_lo"), r.get("final_hi"))
    ]
    if widths and max(widths) > 0.1:
        if str(summary.get("task", "")).startswith("data "):
            tips.append(
                f"Some intervals are {100 * max(widths):.0f} points wide: each device tests on its few latest "
                "recorded examples; more recordings per device (or a larger <code>data.test_fraction</code>) "
                "narrow them."
            )
        else:
            tips.append(
                f"Some intervals are {100 * max(widths):.0f} points wide: more test data per device "
                "(<code>--set fleet.test_samples_per_device=…</code>) or a larger held-out pool "
                "(<code>--set fleet.pool_per_class=…</code>) narrows them."
            )
    return tips


def headline_html(
    s: Any,
    summary: dict[str, Any],
    sizes: dict[str, int],
    curves: dict[str, dict[str, list[float]]] | None = None,
) -> str:
    """The report's opening: the answer in numbers with 95% intervals, and what to try next."""
    done = int(summary.get("rounds_done", s.rounds))
    parts = []
    if summary.get("complete") is False:
        out = html.escape(str(summary.get("out_dir", "DIR")))
        parts.append(
            f'<p class="warn"><b>Incomplete run</b>: interrupted after round {done} of {s.rounds}; these are the '
            f"results of the rounds done. Continue it with <code>fedtiny run --resume {out}</code>.</p>"
        )
    lines = [_event_headline(s, summary, ev, per, sizes) for ev, per in summary.get("drift", {}).items()]
    lines = [x for x in lines if x]
    fleet = _fleet_headline(summary, done)
    if fleet:
        lines.append(fleet)
    if lines:
        parts.append("<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
        parts.append(
            '<p class="note">Accuracies are of the deployed int8 model on each device\'s own test data; numbers in '
            "parentheses are 95% intervals (over devices and test samples); per-group numbers are measured on "
            "the comparison subset, where every method runs on the same devices.</p>"
        )
    tips = _suggestions(s, summary, curves)
    if tips:
        parts.append("<p><b>What to try next</b></p><ul>" + "".join(f"<li>{t}</li>" for t in tips) + "</ul>")
    return '<div class="headline">' + "".join(parts) + "</div>" if parts else ""


def clean_set_html(s: Any, summary: dict[str, Any], rows: list[Any]) -> str:
    """What the second line of the accuracy plot is, and why it may fall while the fleet's accuracy rises."""
    if not rows or not _finite(rows[0].accuracy_global, rows[-1].accuracy_global):
        return ""
    g0, g1 = rows[0].accuracy_global, rows[-1].accuracy_global
    recorded = str(summary.get("task", "")).startswith("data ")
    if not recorded and not _finite(summary.get("base_model", {}).get("int8_accuracy_clean")):
        return ""  # a field trial, or a user's model without a factory test set: no such line to explain
    trend = (
        f"falls from {pct(g0)} to {pct(g1)}"
        if g1 < g0 - 0.05
        else f"rises from {pct(g0)} to {pct(g1)}"
        if g1 > g0 + 0.05
        else f"stays near {pct(g1)}"
    )
    if str(summary.get("task", "")).startswith("data "):
        same = all(abs(r.accuracy - r.accuracy_global) < 1e-9 for r in rows)
        return (
            f"<p>The dashed line is the devices' recorded test examples in the base condition (no drift applied): it "
            f"{trend}. The solid line is the same devices in the condition they are in each round (drift applied)"
            + ("; without drift events the two coincide" if same else "")
            + ".</p>"
        )
    base = summary.get("base_model", {}).get("int8_accuracy_clean")
    cond = _knobs(s.fleet.condition) if s.fleet.condition else ""
    where = f"in another condition ({cond})" if cond else "in its own conditions"
    text = (
        f"<p>The dashed line is the clean factory test set: the condition the base model was trained for "
        f"({pct(base)} there). The fleet works {where}, so the same model starts at "
        f"{pct(summary.get('initial_accuracy'))} on the devices' own data. Federated learning adapts the head to "
        f"the fleet's condition; its accuracy on clean factory data {trend}"
    )
    if g1 < g0 - 0.05:
        text += (
            ": the model specializes for where it is deployed, which is what the fleet needs (it is not evaluated on "
            "factory data in the field)"
        )
    return text + ".</p>"


# -- tables -------------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    """A table cell; an interval such as 74.2–82.8 never breaks across lines (a word joiner after the dash)."""
    return f"<td>{html.escape(str(v)).replace('–', '–&#8288;')}</td>"


def comparison_html(summary: dict[str, Any], recover: float) -> str:
    rows = summary.get("comparison", [])
    ev_rows = [r for r in rows if "pre_drift" in r]
    all_rows = [r for r in rows if r.get("group") == "all" and "pre_drift" not in r]
    parts = []
    if ev_rows:
        head = [
            "drift event",
            "method",
            "before the drift",
            "right after",
            "drop",
            "recovered?",
            "at the end of the event",
            "mean from the drift on",
            "forgetting (pre-drift data)",
        ]
        body = []
        for r in ev_rows:
            rec = r.get("recovery")
            seen = int(r.get("end", r["at"])) - int(r["at"]) + 1
            if rec == "recovered":
                k = r.get("rounds_to_recover")
                recovered = f"in {k} round{'s' if k != 1 else ''}"
            elif rec == "no drop":
                recovered = "no drop to recover"
            elif r["method"] == "static":
                recovered = "does not learn"
            else:
                recovered = f"not in {seen} round{'s' if seen != 1 else ''}"
            end = pct_ci(
                r.get("recovered_accuracy"), r.get("recovered_accuracy_lo"), r.get("recovered_accuracy_hi")
            )
            if r.get("final_within_noise") is True:
                end += " ≈ federated"
            body.append(
                "<tr>"
                + "".join(
                    _cell(c)
                    for c in [
                        f"{r.get('event', r['group'])} (round {r['at']})",
                        r["method"],
                        pct_ci(r.get("pre_drift"), r.get("pre_drift_lo"), r.get("pre_drift_hi")),
                        pct_ci(r.get("after_drift"), r.get("after_drift_lo"), r.get("after_drift_hi")),
                        pts(r.get("drop")) + (" (noise)" if r.get("drop_within_noise") is True else ""),
                        recovered,
                        f"{end} (round {r.get('end', '')})",
                        pct_ci(r.get("auc"), r.get("auc_lo"), r.get("auc_hi")),
                        pts(r.get("forgetting")) if r.get("forgetting") is not None else "-",
                    ]
                )
                + "</tr>"
            )
        parts.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr>"
            + "".join(body)
            + "</table>"
        )
        parts.append(
            f'<p class="note">before the drift: the round before it; drop: before minus right after, in percentage '
            f"points (“noise”: within the 95% interval of the difference); recovered: back to "
            f"{int(100 * recover)}% of the accuracy before the drift, counted in rounds after it, within the "
            f"rounds the event was observed (“not in N rounds”: not within the N rounds between the drift and the "
            f"next event or the end of the run; run longer to see more); mean from the drift on: the area under "
            f"the curve divided by the rounds; forgetting: accuracy lost on the group's pre-drift data by the last "
            f"round (negative: gained). “≈ federated”: within noise of federated learning.</p>"
        )
    if all_rows:
        a = all_rows[0].get("auc_from", 1)
        since = (
            f"mean from the first drift on (round {a})"
            if ev_rows
            else f"mean over rounds {a}–{summary.get('rounds_done', '')}"
        )
        head = ["whole fleet", "before learning", "last round", since, "difference to federated (last round)"]
        body = []
        for r in all_rows:
            d = r.get("final_diff_vs_federated")
            vs = (
                ""
                if r["method"] == "federated" or not _finite(d)
                else (
                    f"{-100 * d:+.1f} pts"
                    + (" (within noise)" if r.get("final_within_noise") is True else "")
                )
            )
            body.append(
                "<tr>"
                + "".join(
                    _cell(c)
                    for c in [
                        r["method"],
                        pct_ci(r.get("initial"), r.get("initial_lo"), r.get("initial_hi")),
                        pct_ci(r.get("final"), r.get("final_lo"), r.get("final_hi")),
                        pct_ci(r.get("auc"), r.get("auc_lo"), r.get("auc_hi")),
                        vs,
                    ]
                )
                + "</tr>"
            )
        parts.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr>"
            + "".join(body)
            + "</table>"
        )
    return "".join(parts)


def _words(v: Any) -> str:
    """A fact's value for a person: dicts as 'a 3, b 2', floats rounded, None as '-'."""
    if isinstance(v, dict):
        if not v:
            return "none"
        return ", ".join(f"{str(k).replace('_', ' ')} {_words(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_words(x) for x in v) if v else "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def facts_html(s: Any, summary: dict[str, Any]) -> str:
    stats = summary.get("fleet_stats", {})
    reasons = {k: n for k, n in summary.get("updates_rejected_reasons", {}).items() if n}
    facts: dict[str, Any] = {
        "rounds": f"{summary.get('rounds_done', s.rounds)} of {s.rounds}",
        "accuracy before learning": pct_ci(
            summary.get("initial_accuracy"),
            summary.get("initial_accuracy_lo"),
            summary.get("initial_accuracy_hi"),
        ),
        "accuracy after the last round": pct_ci(
            summary.get("final_accuracy"), summary.get("final_accuracy_lo"), summary.get("final_accuracy_hi")
        ),
        "updates rejected": f"{_words(summary.get('updates_rejected', 0))}"
        + (f" ({_words(reasons)})" if reasons else ""),
        "stragglers dropped": summary.get("stragglers", 0),
        "bytes up": summary.get("bytes_up"),
        "bytes down": summary.get("bytes_down"),
        "energy for learning (J)": summary.get("energy_j", 0),
        "wall time (s)": summary.get("wall_seconds"),
        **{f"fleet: {str(k).replace('_', ' ')}": v for k, v in stats.items()},
        "device RAM for learning (bytes)": summary.get("device_budget", {}).get("ram_bytes"),
    }
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_words(v))}</td></tr>" for k, v in facts.items()
    )
    return f"<table>{rows}</table>"


STYLE = """body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;line-height:1.4;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f4f4f4}img{max-width:100%;display:block;margin:1em 0}
.headline{background:#f0f6fc;border-left:4px solid #1f77b4;padding:0.4em 1.2em;margin:1em 0;font-size:15px}
.headline li{margin:0.35em 0}.warn{background:#fff4e5;border-left:4px solid #ff7f0e;padding:0.5em 1em}
.note{color:#555;font-size:13px}code{background:#eee;padding:0 3px}"""


def write_report(
    plan: Any, summary: dict[str, Any], out: Path, intro: str = "", extra_html: str = ""
) -> list[str]:
    """Write groups.png, costs.png, fleet.png and report.html; returns the file names. A field trial passes its
    own ``intro`` (no baselines there) and ``extra_html`` (its boards and their failures, shown first)."""
    s = plan.scenario
    rows = plan.server.rows
    curves = plan.server.curves
    drift = [(e.group, e.at) for e in s.drift if e.group != "fleet"]
    label = summary.get("task") or s.task.name
    if str(label).startswith("data "):
        label = f"recorded data ‘{label[5:]}’"
    title = f"{s.name}: {label}, {s.fleet.devices} devices, {s.strategy.name}"
    groups = summary.get("fleet_stats", {}).get("groups", {})
    sizes = {str(k): int(v) for k, v in groups.items()} if isinstance(groups, dict) else {}
    subset = min(s.eval.baseline_devices, s.fleet.devices)
    panel_sizes = sizes if subset >= s.fleet.devices else {}
    plot_groups(
        curves,
        drift,
        out / "groups.png",
        title + ("" if subset >= s.fleet.devices else f" (comparison subset of {subset} devices)"),
        {**panel_sizes, "all": subset},
    )
    plot_costs(rows, out / "costs.png")
    plot_fleet(out, out / "fleet.png")
    acc_png = out / "accuracy.png"
    default_intro = (
        f"{html.escape(title)}; seed {s.seed}; {s.rounds} rounds. Baselines (static model, local-only "
        f"on-device learning) and personalization are measured on the same seeded subset of {subset} devices."
    )
    summary = {**summary, "out_dir": str(out)}
    methods = [m for m in METHOD_STYLE if curves.get(m)]
    per_group = "Per group: " + " vs ".join(methods) if len(methods) > 1 else "Per group"
    comparison = comparison_html(summary, s.eval.recover)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedtiny report: {html.escape(s.name)}</title>
<style>{STYLE}</style></head><body>
<h1>fedtiny report: {html.escape(s.name)}</h1>
{headline_html(s, summary, sizes, curves)}
<p>{html.escape(intro) if intro else default_intro}</p>
{extra_html}<h2>Accuracy over rounds</h2>{_img(acc_png) if acc_png.exists() else ""}{clean_set_html(s, summary, rows)}
<h2>{per_group}</h2>
<p class="note">Shaded: 95% intervals. Thin lines: a drifted group's accuracy on its data from before the drift
(forgetting). Dashed red: drift events.</p>{_img(out / "groups.png")}
{"<h2>Comparison table</h2>" + comparison if comparison else ""}
<h2>Bytes, energy and participation per round</h2>{_img(out / "costs.png")}
<h2>Fleet statistics</h2>{_img(out / "fleet.png")}{facts_html(s, summary)}
{inference_table_html(s.task.name)}
</body></html>
"""
    (out / "report.html").write_text(doc)
    return ["report.html", "groups.png", "costs.png", "fleet.png"]
