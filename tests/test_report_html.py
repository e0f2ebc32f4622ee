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
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, round_spec
from fedtiny.report.drift import comparison, drift_metrics
from fedtiny.report.html import METHOD_STYLE
from fedtiny.results import plot_accuracy
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
    layout, head = prepare_synthetic(fleet_spec(s), tmp_path)
    srv = FleetServer(round_spec(s), layout, tmp_path / "fleet", head, out_dir=tmp_path)
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


EVIL = "<script>alert(1)</script>"


def _fast_plan(tmp_path: Path, group: str = EVIL) -> tuple[Any, dict[str, Any]]:
    """A plan and summary without running a fleet: made-up rows and curves of a 6-round run with one drift
    event at round 3 on ``group`` (federated recovers, local-only less, static never)."""
    from fedtiny.results import RoundRow

    s = scenario_from_dict(
        {
            "name": f"run {EVIL}",
            "rounds": 6,
            "task": {"name": "digits"},
            "fleet": {"devices": 20},
            "drift": [{"at": 3, "fraction": 0.5, "group": group, "condition": {"brightness": -0.3}}],
        }
    )
    fed = [0.5, 0.6, 0.7, 0.4, 0.6, 0.7, 0.72]
    loc = [0.5, 0.55, 0.6, 0.35, 0.45, 0.5, 0.52]
    static = [0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3]
    curves: dict[str, dict[str, list[float]]] = {}
    for m, c in (("federated", fed), ("local-only", loc), ("static", static)):
        curves[m] = {"all": c, group: [v - 0.05 for v in c]}
        curves[f"{m}_lo"] = {k: [v - 0.03 for v in x] for k, x in curves[m].items()}
        curves[f"{m}_hi"] = {k: [v + 0.03 for v in x] for k, x in curves[m].items()}
        curves[f"{m}_se"] = {k: [0.015] * len(x) for k, x in curves[m].items()}
    rows = [
        RoundRow(
            round=r,
            segment=0,
            accuracy=fed[r],
            accuracy_global=0.9,
            loss=0.5,
            devices_trained=10,
            updates_rejected=0,
            gateways_failed=0,
            bytes_down=1000,
            bytes_up=1000,
            wall_s=0.1,
        )
        for r in range(7)
    ]
    metrics = drift_metrics(curves, [(group, 3)])
    summary = {
        "initial_accuracy": fed[0],
        "final_accuracy": fed[-1],
        "rounds_done": 6,
        "comparison": comparison(metrics, curves),
        "drift": metrics,
        "fleet_stats": {"groups": {"fleet": 10, group: 10}, "note": EVIL},
        "base_model": {"int8_accuracy_clean": 0.9},
    }
    return SimpleNamespace(scenario=s, server=SimpleNamespace(rows=rows, curves=curves)), summary


def test_names_from_user_data_are_escaped(tmp_path: Path) -> None:
    """Autoescape: a scenario or group name with markup shows as text, never as markup."""
    from fedtiny.report.html import write_report

    plan, summary = _fast_plan(tmp_path)
    write_report(plan, summary, tmp_path, extra_html="<p>boards</p>")
    doc = (tmp_path / "report.html").read_text()
    assert "<script" not in doc and "&lt;script&gt;" in doc
    assert "<title>fedtiny report: run &lt;script&gt;alert(1)&lt;/script&gt;</title>" in doc
    assert "the 10 devices of group “&lt;script&gt;alert(1)&lt;/script&gt;” drifted" in doc  # headline
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt; (round 3)</td>" in doc  # comparison table
    assert "<p>boards</p>" in doc  # the caller's own HTML is inserted as it is
    assert "{" not in doc.split("</style>", 1)[1]


def test_headline_and_advice_are_data() -> None:
    """The headline, the advice and the tables are typed data; the template only shows them."""
    from fedtiny.report.advice import RecipeAdvice, recipe_advice, suggestions
    from fedtiny.report.headline import Headline, headline
    from fedtiny.report.tables import comparison_tables
    from fedtiny.report.words import Span, as_text

    plan, summary = _fast_plan(Path("."), group="dim")
    s, curves = plan.scenario, plan.server.curves
    h = headline(s, summary, {"dim": 10}, curves)
    assert isinstance(h, Headline) and h and h.incomplete is None
    event, fleet = (as_text(a) for a in h.answers)
    assert event.startswith("At round 3, the 10 devices of group “dim” drifted (brightness -0.3). ")
    assert "Federated learning fell from 65.0% (62.0–68.0) to 35.0% (32.0–38.0)" in event
    assert "local-only learning" in event and "the static model" in event
    assert fleet.startswith("On the whole fleet, the deployed int8 model went from 50.0% to 72.0%")
    assert Span("72.0%", "bold") in h.answers[1]
    assert all(isinstance(sp, Span) for tip in h.tips for sp in tip)
    assert h.tips == suggestions(s, summary, curves)
    rising = {"federated": {"all": [0.5 + 0.02 * r for r in range(7)]}}
    advice = recipe_advice(s, rising)
    assert isinstance(advice, RecipeAdvice) and advice.longer == 12
    assert advice.change == "--set strategy.name=fedadam --set strategy.server_lr=0.03"
    assert Span(advice.change, "code") in advice.rich()
    assert recipe_advice(s, {"federated": {"all": [0.7] * 7}}) is None
    table = comparison_tables(summary, s.eval.recover)
    assert table.events is not None and table.fleet is not None and table.recover_pct == 95
    assert [r[1] for r in table.events.rows] == ["federated", "local-only", "static"]
    assert table.fleet.rows[0][:2] == ["federated", "50.0% (47.0–53.0)"]


def test_interrupted_run_headline_escapes_the_out_dir() -> None:
    from fedtiny.report.headline import Incomplete, headline
    from fedtiny.report.html import headline_html

    s = scenario_from_dict({"name": "x", "rounds": 10, "task": {"name": "digits"}})
    summary = {"complete": False, "rounds_done": 3, "out_dir": "runs/<b>"}
    assert headline(s, summary, {}).incomplete == Incomplete(
        3, 10, "runs/<b>", "fedtiny run --resume runs/<b>"
    )
    doc = headline_html(s, summary, {})
    assert "fedtiny run --resume runs/&lt;b&gt;" in doc and "<b>Incomplete run</b>" in doc


def test_the_inference_table_leads_with_the_users_model() -> None:
    """A run on the user's model shows that model's own row first (issue 19 §4), the reference models after."""
    from fedtiny.model.build import REFERENCE_DIR
    from fedtiny.report.inference_html import UserModel, inference_table

    model = next(REFERENCE_DIR.glob("vibration-seed7-*.tflite")).read_bytes()
    table = inference_table("vibration", UserModel("your model (m.tflite)", model, 0.8125))
    assert table is not None
    first = table.rows[0]
    assert first.model == "your model (m.tflite)" and first.highlight and first.int8_accuracy == "81.2%"
    assert first.size_kib == f"{len(model) / 1024:.1f}" and first.arena_tflm != "n/a"
    assert not any(r.highlight for r in table.rows[1:])  # the reference rows are for comparison
