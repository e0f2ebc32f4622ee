"""report.html is self-contained (inline PNGs) and shows the curves and the comparison table."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from matplotlib.colors import to_hex

from fedtiny.clients.simulated.gateway import handle
from fedtiny.config import scenario_from_dict
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.report.drift import comparison, drift_metrics
from fedtiny.report.html import METHOD_STYLE
from fedtiny.report.results import plot_accuracy
from fedtiny.runner import _concat_device_log, fleet_stats
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


def test_report_is_self_contained_with_curves_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario_from_dict(
        {
            "name": "rep",
            "seed": 2,
            "rounds": 4,
            "task": {"name": "digits"},
            "model": {"test_samples": 50, "factory_samples": 60},
            "fleet": {
                "devices": 16,
                "devices_per_gateway": 4,
                "samples_per_device": 8,
                "cache_size": 12,
                "new_samples_per_round": 4,
                "test_samples_per_device": 6,
                "pool_per_class": 12,
            },
            "train": {"epochs": 1, "batch_size": 4},
            "drift": [{"at": 2, "fraction": 0.5, "group": "dim", "condition": {"brightness": -0.3}}],
            "runtime": {"engine": "inline"},
        }
    )
    layout, head = prepare_synthetic(s, tmp_path)
    srv = FleetServer(s, layout, tmp_path / "fleet", head, out_dir=tmp_path)
    srv.run(InlineTransport(handle))
    plan = SimpleNamespace(scenario=s, server=srv, out_dir=tmp_path, layout=layout)
    from fedtiny.report.html import write_report

    _concat_device_log(tmp_path)
    plot_accuracy(srv.rows, tmp_path / "accuracy.png", "t", layout.segment_starts)
    metrics = drift_metrics(srv.curves, [("dim", 2)])
    summary = {
        "initial_accuracy": srv.rows[0].accuracy,
        "final_accuracy": srv.rows[-1].accuracy,
        "updates_rejected": 0,
        "bytes_up": 1,
        "bytes_down": 1,
        "wall_seconds": 1.0,
        "device_budget": {"ram_bytes": 1},
        "comparison": comparison(metrics, srv.curves),
        "fleet_stats": fleet_stats(plan),
    }
    summary["drift"] = metrics
    figs = _capture_figures(monkeypatch)
    files = write_report(plan, summary, tmp_path)
    doc = (tmp_path / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', doc)
    assert len(imgs) == 4 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in doc and "https://" not in doc and "<script" not in doc  # opens offline
    for method in ("federated", "local-only", "static"):
        assert f"<td>{method}</td>" in doc
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
    # issue 13 item 15: the report opens with the answer in numbers with 95% intervals
    body = doc.split("</style>", 1)[1]
    head = body[body.index('<div class="headline">') : body.index("</div>")]
    assert body.index('<div class="headline">') < body.index("<h2>")
    assert "At round 2, the 8 devices of group “dim” drifted (brightness -0.3)" in head
    assert re.search(r"federated learning .*\d+\.\d% \(\d+\.\d–\d+\.\d\)", head, re.IGNORECASE)
    assert "local-only learning" in head and "the static model" in head and "What to try next" in head
    # item 16: no raw Python dicts, accuracies as percentages
    assert "{" not in body and "}" not in body
    cells = re.findall(r"<td>([^<]*)</td>", body)
    assert not [c for c in cells if re.fullmatch(r"0\.\d+", c)], cells  # no bare fractions
    # item 16: one colour and line style per method in every panel, one legend outside the axes, integer rounds
    groups = figs["groups.png"]
    assert len(groups.legends) == 1 and all(ax.get_legend() is None for ax in groups.axes)
    for m, st in METHOD_STYLE.items():
        lines = [ln for ax in groups.axes for ln in ax.get_lines() if ln.get_label() == st["label"]]
        assert {(to_hex(ln.get_color()), ln.get_linestyle()) for ln in lines} <= {
            (st["color"], {"-": "-", "--": "--", ":": ":", "-.": "-."}[st["ls"]])
        }
        if m != "personalized":
            assert len(lines) == len(groups.axes), m
    for fig in figs.values():
        for ax in fig.axes:
            assert all(float(t).is_integer() for t in ax.get_xticks()) or ax.get_xlabel().startswith(
                ("virtual", "energy")
            )
    # costs.png: y-axes from 0, so a constant stays flat instead of filling the panel
    costs = figs["costs.png"]
    assert all(ax.get_ylim()[0] == 0 for ax in costs.axes)
    flat = costs.axes[0].get_lines()[1].get_ydata()  # bytes down: the same every round
    lo, hi = costs.axes[0].get_ylim()
    assert (max(flat) - min(flat)) < 0.05 * (hi - lo)


def _capture_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep every figure the report saves, by file name."""
    from matplotlib.figure import Figure

    figs: dict[str, Any] = {}
    real = Figure.savefig

    def savefig(self: Figure, fname: Any, *a: Any, **k: Any) -> None:
        figs[Path(str(fname)).name] = self
        real(self, fname, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def test_interrupted_run_says_so_and_how_to_resume(tmp_path: Path) -> None:
    from fedtiny.report.html import headline_html

    s = scenario_from_dict({"name": "x", "rounds": 10, "task": {"name": "digits"}})
    doc = headline_html(
        s,
        {
            "complete": False,
            "rounds_done": 3,
            "out_dir": "runs/x",
            "initial_accuracy": 0.5,
            "final_accuracy": 0.7,
        },
        {},
    )
    assert "Incomplete run" in doc and "after round 3 of 10" in doc and "fedtiny run --resume runs/x" in doc
    assert "50.0%" in doc and "70.0%" in doc
