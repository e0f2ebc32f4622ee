"""report.html is self-contained (inline PNGs) and shows the curves and the comparison table."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace

from clients.simulated.gateway import handle
from fedtiny.config import scenario_from_dict
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.report.drift import comparison, drift_metrics
from fedtiny.report.results import plot_accuracy
from fedtiny.runner import _concat_device_log, fleet_stats
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


def test_report_is_self_contained_with_curves_and_table(tmp_path: Path) -> None:
    s = scenario_from_dict({
        "name": "rep", "seed": 2, "rounds": 4, "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {"devices": 16, "devices_per_gateway": 4, "samples_per_device": 8, "cache_size": 12,
                  "new_samples_per_round": 4, "test_samples_per_device": 6, "pool_per_class": 12},
        "train": {"epochs": 1, "batch_size": 4},
        "drift": [{"at": 2, "fraction": 0.5, "group": "dim", "condition": {"brightness": -0.3}}],
        "runtime": {"engine": "inline"},
    })
    layout, head = prepare_synthetic(s, tmp_path)
    srv = FleetServer(s, layout, tmp_path / "fleet", head, out_dir=tmp_path)
    srv.run(InlineTransport(handle))
    plan = SimpleNamespace(scenario=s, server=srv, out_dir=tmp_path, layout=layout)
    from fedtiny.report.html import write_report

    _concat_device_log(tmp_path)
    plot_accuracy(srv.rows, tmp_path / "accuracy.png", "t", layout.segment_starts)
    metrics = drift_metrics(srv.curves, [("dim", 2)])
    summary = {"initial_accuracy": srv.rows[0].accuracy, "final_accuracy": srv.rows[-1].accuracy, "updates_rejected": 0,
               "bytes_up": 1, "bytes_down": 1, "wall_seconds": 1.0, "device_budget": {"ram_bytes": 1},
               "comparison": comparison(metrics, srv.curves), "fleet_stats": fleet_stats(plan)}
    files = write_report(plan, summary, tmp_path)
    doc = (tmp_path / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', doc)
    assert len(imgs) == 4 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in doc and "https://" not in doc and "<script" not in doc  # opens offline
    for method in ("federated", "local-only", "static"):
        assert f"<td>{method}</td>" in doc
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
