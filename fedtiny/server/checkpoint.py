"""Checkpoints of the federated round loop: the typed run state (fedtiny/server/run_state.py) after a round,
everything a resumed run needs to end exactly like an uninterrupted one (head, the Flower strategy's state:
server momentum, optimizer moments, adaptive clipping norm; batteries, local-only and personalized heads,
rows, curves).

One round is two files, ``state-RRRRRR.npz`` (arrays) and ``state-RRRRRR.json`` (rows, curves, counts);
``latest.json`` names the last complete one and is replaced atomically after both are written."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fedtiny.errors import FedTinyError
from fedtiny.ondevice import Int8Head
from fedtiny.results import RoundRow
from fedtiny.server.run_state import EvalState, FleetState, RunState

#: the arrays of state-RRRRRR.npz that are not the strategy's (``DeviceStrategy.state()`` adds its own keys)
ARRAYS = ("head_w", "head_s", "head_b", "head_q", "battery", "loc_w", "loc_b", "per_w", "per_b", "per_has")
META = ("round", "rows", "curves", "rejected_total", "rejected_reasons")


def save_checkpoint(st: RunState, d: Path) -> None:
    """``st`` (the run after round ``st.round``), written atomically; older checkpoints are removed."""
    d.mkdir(exist_ok=True)
    r, h, ev = st.round, st.head, st.evaluation
    arrays = {
        "head_w": h.weights,
        "head_s": h.weight_scales,
        "head_b": h.bias,
        "head_q": np.array(
            [h.input_scale, h.input_zero_point, h.output_scale, h.output_zero_point], dtype=np.float64
        ),
        "battery": st.fleet.battery,
        "loc_w": ev.loc_w,
        "loc_b": ev.loc_b,
        "per_w": ev.per_w,
        "per_b": ev.per_b,
        "per_has": ev.per_has,
        **st.strategy,
    }
    np.savez(d / f"state-{r:06d}.npz", **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds
    meta = {
        "round": r,
        "rows": [_row(x) for x in st.rows],
        "curves": ev.curves,
        "rejected_total": st.rejected_total,
        "rejected_reasons": st.rejected_reasons,
    }
    (d / f"state-{r:06d}.json").write_text(json.dumps(meta))
    tmp = d / "latest.json.tmp"
    tmp.write_text(json.dumps({"round": r}))
    os.replace(tmp, d / "latest.json")  # atomic: the checkpoint of round r is complete
    for old in d.glob("state-*"):
        if int(old.stem.split("-")[1]) < r:
            old.unlink(missing_ok=True)


def load_checkpoint(d: Path) -> RunState | None:
    """The last complete checkpoint in ``d``; None if there is none. A damaged one raises FedTinyError with
    one line naming the file and what is wrong."""
    latest = d / "latest.json"
    if not latest.exists():
        return None
    try:
        r = int(json.loads(latest.read_text())["round"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FedTinyError(f'{latest}: expected {{"round": N}} ({type(exc).__name__}: {exc})') from None
    npz, js = d / f"state-{r:06d}.npz", d / f"state-{r:06d}.json"
    try:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(js.read_text())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise FedTinyError(f"checkpoint of round {r} in {d} is unreadable: {exc}") from None
    for path, have, want in ((npz, arrays, ARRAYS), (js, meta, META)):
        missing = [k for k in want if k not in have]
        if missing:
            raise FedTinyError(
                f"{path}: missing {', '.join(missing)}; expected a checkpoint written by fedtiny"
            )
    q = arrays["head_q"]
    head = Int8Head(
        arrays["head_w"], arrays["head_s"], arrays["head_b"], float(q[0]), int(q[1]), float(q[2]), int(q[3])
    )
    return RunState(
        round=r,
        head=head,
        fleet=FleetState(arrays["battery"]),
        evaluation=EvalState(
            arrays["loc_w"],
            arrays["loc_b"],
            arrays["per_w"],
            arrays["per_b"],
            arrays["per_has"],
            meta["curves"],
        ),
        rows=[RoundRow(**x) for x in meta["rows"]],
        rejected_total=int(meta["rejected_total"]),
        rejected_reasons=dict(meta["rejected_reasons"]),
        strategy={k: v for k, v in arrays.items() if k not in ARRAYS},
    )


def _row(row: RoundRow) -> dict[str, object]:
    """A round row as the checkpoint keeps it; ``labels`` only when the round had partial labels, so that a
    fleet whose every sample is labelled writes the checkpoint it always did."""
    d = asdict(row)
    if not d["labels"]:
        del d["labels"]
    return d
