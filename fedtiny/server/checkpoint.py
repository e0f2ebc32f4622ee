"""Checkpoints of the federated round loop: everything a resumed run needs to end exactly like an
uninterrupted one (head, the Flower strategy's state: server momentum, optimizer moments, adaptive clipping
norm; batteries, local-only and personalized heads, rows, curves)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fedtiny.ondevice import Int8Head
from fedtiny.report.results import RoundRow


def save_checkpoint(srv: Any, d: Path) -> None:
    """State after round ``srv.round``, written atomically; older checkpoints are removed."""
    assert srv.head is not None
    d.mkdir(exist_ok=True)
    r = srv.round
    h = srv.head
    np.savez(
        d / f"state-{r:06d}.npz",
        head_w=h.weights,
        head_s=h.weight_scales,
        head_b=h.bias,
        head_q=np.array(
            [h.input_scale, h.input_zero_point, h.output_scale, h.output_zero_point], dtype=np.float64
        ),
        battery=srv.battery,
        loc_w=srv.loc_w,
        loc_b=srv.loc_b,
        per_w=srv.per_w,
        per_b=srv.per_b,
        per_has=srv.per_has,
        **srv.strategy.state(),
    )
    meta = {
        "round": r,
        "rows": [asdict(x) for x in srv.rows],
        "curves": srv.curves,
        "rejected_total": srv.rejected_total,
        "rejected_reasons": srv.rejected_reasons,
    }
    (d / f"state-{r:06d}.json").write_text(json.dumps(meta))
    tmp = d / "latest.json.tmp"
    tmp.write_text(json.dumps({"round": r}))
    os.replace(tmp, d / "latest.json")  # atomic: the checkpoint of round r is complete
    for old in d.glob("state-*"):
        if int(old.stem.split("-")[1]) < r:
            old.unlink(missing_ok=True)


def load_checkpoint(srv: Any, d: Path) -> bool:
    """Restore the last complete checkpoint in ``d`` into ``srv``; False if there is none."""
    if not (d / "latest.json").exists():
        return False
    r = int(json.loads((d / "latest.json").read_text())["round"])
    st = dict(np.load(d / f"state-{r:06d}.npz"))
    meta = json.loads((d / f"state-{r:06d}.json").read_text())
    q = st["head_q"]
    srv.head = Int8Head(
        st["head_w"], st["head_s"], st["head_b"], float(q[0]), int(q[1]), float(q[2]), int(q[3])
    )
    srv.battery, srv.loc_w, srv.loc_b = st["battery"], st["loc_w"], st["loc_b"]
    srv.per_w, srv.per_b, srv.per_has = st["per_w"], st["per_b"], st["per_has"]
    srv.strategy.load_state(st)
    srv.rows = [RoundRow(**x) for x in meta["rows"]]
    srv.curves = meta["curves"]
    srv.rejected_total = int(meta["rejected_total"])
    srv.rejected_reasons = dict(meta["rejected_reasons"])
    srv.round = r
    return True
