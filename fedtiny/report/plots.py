"""The report's PNG figures (matplotlib, Agg): accuracy per group with 95% bands, costs per round, the fleet.

Every method has one colour and line style in every plot (:data:`METHOD_STYLE`); legends sit outside the
axes; rounds are integer ticks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from fedtiny.report.words import finite

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from fedtiny.results import RoundRow

#: accuracy curves by method, then group (``all`` for the fleet): ``curves[method][group][round]``
Curves = dict[str, dict[str, list[float]]]


class MethodStyle(TypedDict):
    color: str
    ls: str
    marker: str
    label: str


#: one colour, line style and marker per method, in every panel and every plot
METHOD_STYLE: dict[str, MethodStyle] = {
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


def _agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def round_axis(ax: Axes, last: int) -> None:
    """Integer round ticks from 0 to ``last``."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=2))
    ax.set_xlim(-0.3, max(last, 1) + 0.3)
    ax.set_xlabel("round")


def from_zero(ax: Axes, values: list[float], integer: bool = False) -> None:
    """A y-axis from 0 to a little above the largest value, without an offset: a flat line stays flat."""
    from matplotlib.ticker import MaxNLocator

    top = max([v for v in values if finite(v)], default=0.0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def _drift_lines(ax: Axes, drift: list[tuple[str, int]]) -> None:
    for _g, at in drift:
        if at > 0:
            ax.axvline(at - 0.5, color=DRIFT_COLOR, alpha=0.6, ls="--", lw=1)


def _shared_legend(fig: Figure, axes: list[Axes], ncol: int = 3) -> None:
    """One legend for every panel, below them (covers no data): the union of the panels' entries."""
    handles: dict[str, Artist] = {}
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
    curves: Curves,
    drift: list[tuple[str, int]],
    path: Path,
    title: str,
    sizes: dict[str, int] | None = None,
    ylabel: str = "accuracy (%), comparison subset",
) -> set[str]:
    """One panel per group (``all`` first): every method's accuracy with its 95% band, the drifted group's
    accuracy on its pre-drift data (thin), drift markers; y from 0 to 100% in every panel; one legend.
    Returns what it drew besides the curves (for a caption that names only that): ``bands``, ``old``
    (pre-drift lines), ``drift`` (drift markers)."""
    drawn: set[str] = set()
    _agg()
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

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
    row: list[Axes] = list(axes[0])
    last = max((len(c) - 1 for m in METHOD_STYLE for c in curves.get(m, {}).values()), default=1)
    for ax, g in zip(row, groups):
        for m, st in METHOD_STYLE.items():
            acc = curves.get(m, {}).get(g)
            if acc:
                x = list(range(len(acc)))
                lo, hi = curves.get(f"{m}_lo", {}).get(g), curves.get(f"{m}_hi", {}).get(g)
                if lo and hi and len(lo) == len(acc) == len(hi):
                    ax.fill_between(
                        x, [100 * v for v in lo], [100 * v for v in hi], color=st["color"], alpha=0.12, lw=0
                    )
                    drawn.add("bands")
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
                drawn.add("old")
        _drift_lines(ax, [(gg, at) for gg, at in drift if gg == g or g == "all"])
        size = (sizes or {}).get(g)
        name = "all devices" if g == "all" else f"group {g}"
        ax.set_title(f"{name} ({size} devices)" if size else name, fontsize=9)
        round_axis(ax, last)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    row[0].set_ylabel(ylabel)
    if any(at > 0 for _, at in drift):
        row[0].add_line(Line2D([], [], color=DRIFT_COLOR, ls="--", lw=1, label="drift event"))
        drawn.add("drift")
    _shared_legend(fig, row, ncol=3 if n > 1 else 2)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return drawn


def groups_caption(drawn: set[str]) -> str:
    """The note under groups.png: what :func:`plot_groups` drew besides the curves, nothing it did not."""
    parts = {
        "bands": "Shaded: 95% intervals.",
        "old": "Thin lines: a drifted group's accuracy on its data from before the drift (forgetting).",
        "drift": "Dashed red: drift events.",
    }
    return " ".join(text for key, text in parts.items() if key in drawn)


#: the participation counts of costs.png: RoundRow field, legend label, colour
_COUNTS = [
    ("devices_available", "awake", "#7f7f7f"),
    ("devices_sampled", "sampled", "#bcbd22"),
    ("devices_trained", "aggregated", "#1f77b4"),
    ("stragglers", "stragglers (deadline)", "#ff7f0e"),
    ("devices_dropped", "dropped out", "#e377c2"),
    ("updates_rejected", "rejected", "#d62728"),
]


#: the counts a field trial measures, with its words: boards that answered, sampled, aggregated, rejected
FIELD_COUNTS = [
    ("devices_available", "boards reached", "#7f7f7f"),
    ("devices_sampled", "sampled", "#bcbd22"),
    ("devices_trained", "aggregated", "#1f77b4"),
    ("updates_rejected", "rejected", "#d62728"),
]


def plot_costs(
    rows: list[RoundRow],
    path: Path,
    energy: bool = True,
    counts: list[tuple[str, str, str]] | None = None,
    down_label: str = "down: head to trainers + redeploy",
) -> None:
    """Bytes, energy and participation per round; y-axes from 0 (a constant stays a flat line). ``energy``:
    False where nothing measures it (a field trial: no energy panel); ``counts``: the participation counts
    (field, label, colour; default all of a simulation's)."""
    _agg()
    import matplotlib.pyplot as plt

    counts_spec = _COUNTS if counts is None else counts
    fig, axes = plt.subplots(
        1, 3 if energy else 2, figsize=(13 if energy else 9, 3.9), dpi=100, layout="constrained"
    )
    ax = list(axes) if energy else [axes[0], None, axes[1]]
    data = rows[1:]
    x = [r.round for r in data]
    last = x[-1] if x else 1
    up, down = [r.bytes_up / 1e3 for r in data], [r.bytes_down / 1e3 for r in data]
    ax[0].plot(x, up, "o-", ms=3, color="#9467bd", label="up: device updates")
    ax[0].plot(x, down, "s-", ms=3, color="#8c564b", label=down_label)
    ax[0].set_ylabel("kB per round")
    from_zero(ax[0], up + down)
    if ax[1] is not None:
        joules = [r.energy_j for r in data]
        unit, scale = ("mJ", 1e3) if max(joules, default=0.0) < 1 else ("J", 1.0)
        joules = [scale * e for e in joules]
        ax[1].plot(x, joules, "o-", ms=3, color="#17becf", label="fleet energy for learning")
        ax[1].set_ylabel(f"{unit} per round")
        from_zero(ax[1], joules)
    ys_all: list[float] = []
    for key, label, color in counts_spec:
        ys = [float(getattr(r, key, 0) or 0) for r in data]
        if key == "devices_trained" or any(ys):  # a count that is zero in every round is said in the title
            # drawn wide and light: lines on top stay visible
            wide = key in ("devices_available", "devices_sampled")
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
            ys_all += ys
    zero = [
        label
        for key, label, _ in counts_spec
        if key != "devices_trained" and not any(getattr(r, key, 0) for r in data)
    ]
    ax[2].set_title("zero in every round: " + ", ".join(zero) if zero else "", fontsize=8, loc="left")
    ax[2].set_ylabel("boards per round" if counts is FIELD_COUNTS else "devices per round")
    from_zero(ax[2], ys_all, integer=True)
    for a in (a for a in ax if a is not None):
        round_axis(a, last)
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def plot_fleet(out: Path, path: Path) -> bool:
    """Histograms of the virtual seconds and the energy per device-round (``out/device_rounds.npz``); False
    (and no file) when there is no device-round to show (a field trial measures neither)."""
    import numpy as np

    log = out / "device_rounds.npz"
    if not log.exists():
        return False
    d = np.load(log)
    if not len(d["virtual_s"]):
        return False
    _agg()
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100, layout="constrained")
    ax[0].hist(d["virtual_s"], bins=50, color="#1f77b4")
    ax[1].hist(1e3 * d["energy_j"], bins=50, color="#17becf")
    ax[0].set_xlabel("virtual seconds per device-round (compute + link)")
    ax[1].set_xlabel("energy per device-round (mJ)")
    for a in ax:
        a.set_ylabel("device-rounds")
        a.ticklabel_format(axis="x", useOffset=False, style="plain")
        a.xaxis.set_major_locator(MaxNLocator(nbins=5))  # long plain labels must not overlap
        a.grid(alpha=0.3)
    fig.savefig(path)
    plt.close(fig)
    return True
