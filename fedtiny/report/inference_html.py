"""The report's inference table: the measured figures of fedtiny/fleet/inference_costs.json (written by
benchmarks/model_table.py) and what they cost on each board profile, as typed data
(:class:`InferenceTable`) shown by templates/inference.html.j2."""

from __future__ import annotations

from dataclasses import dataclass

from fedtiny.errors import FedTinyError
from fedtiny.fleet.boards import BOARDS, INFERENCE_COSTS_FILE, cycles_per_instruction, inference_costs
from fedtiny.report.jinja import render


@dataclass(frozen=True)
class InferenceRow:
    model: str
    highlight: bool  # the run's task
    size_kib: str
    arena_firmware: str  # bytes
    arena_tflm: str  # bytes
    macs: str
    instructions_portable: str
    instructions_dsp: str
    int8_accuracy: str
    per_board: list[str]  # 'latency ms / energy µJ', one per board of :attr:`InferenceTable.boards`


@dataclass(frozen=True)
class InferenceTable:
    boards: list[str]  # 'name (clock MHz)'
    rows: list[InferenceRow]
    measured_with: str
    cycles_per_instruction: str


@dataclass(frozen=True)
class UserModel:
    """The run's own model (a user's .tflite or Keras model): its row comes first, from the model itself."""

    name: str
    tflite: bytes
    int8_accuracy: float | None


def user_model_row(m: UserModel, boards: int) -> InferenceRow:
    """Size and arenas of the user's model (the firmware's planner when it is built); instructions and latency
    are measured by benchmarks/model_table.py, not at report time."""
    import subprocess

    from fedtiny.model import fwplan
    from fedtiny.model.info import min_arena_bytes

    arena, macs = "planner not built", "n/a"
    try:
        plan = fwplan.firmware_plan(m.tflite)
        if isinstance(plan, str):
            arena = f"refused: {plan}"
        else:
            arena, macs = f"{plan.arena_bytes:,}", f"{plan.macs:,}"
    except FileNotFoundError:
        pass
    except (OSError, RuntimeError, subprocess.SubprocessError):
        arena = "planner failed"
    try:
        tflm = f"{min_arena_bytes(m.tflite):,}"
    except (OSError, RuntimeError, ValueError):
        tflm = "n/a"
    return InferenceRow(
        model=m.name,
        highlight=True,
        size_kib=f"{len(m.tflite) / 1024:.1f}",
        arena_firmware=arena,
        arena_tflm=tflm,
        macs=macs,
        instructions_portable="not measured",
        instructions_dsp="not measured",
        int8_accuracy="n/a" if m.int8_accuracy is None else f"{100 * m.int8_accuracy:.1f}%",
        per_board=["not measured"] * boards,
    )


def inference_table(task: str = "", user: UserModel | None = None) -> InferenceTable | None:
    """The table, or None when the measured figures are missing; with ``user``, the run's own model first
    (highlighted) and fedtiny's reference models below it for comparison."""
    if not INFERENCE_COSTS_FILE.exists():
        return None
    try:
        doc = inference_costs()
    except FedTinyError:
        return None
    boards = list(BOARDS.values())
    rows = [user_model_row(user, len(boards))] if user is not None else []
    for name, m in doc["models"].items():
        opt = m["instructions_optimized"]
        rows.append(
            InferenceRow(
                model=name,
                highlight=user is None and name == task,
                size_kib=f"{m['model_bytes'] / 1024:.1f}",
                arena_firmware=f"{m['arena_firmware_bytes']:,}",
                arena_tflm=f"{m['arena_tflm_bytes']:,}",
                macs=f"{m['macs']:,}",
                instructions_portable=f"{m['instructions_portable']:,}",
                instructions_dsp="n/a" if opt is None else f"{opt:,}",
                int8_accuracy="n/a" if m["int8_accuracy"] is None else f"{100 * m['int8_accuracy']:.1f}%",
                per_board=[
                    f"{1e3 * b.inference_seconds(name):.2f} ms / {1e6 * b.inference_energy_j(name):.1f} µJ"
                    for b in boards
                ],
            )
        )
    return InferenceTable(
        boards=[f"{b.name} ({b.clock_hz / 1e6:g} MHz)" for b in boards],
        rows=rows,
        measured_with=str(doc.get("measured_with", "")),
        cycles_per_instruction=f"{cycles_per_instruction():g}",
    )


def inference_table_html(task: str = "") -> str:
    """An HTML section with the table, or "" when the measured figures are missing."""
    table = inference_table(task)
    return "" if table is None else render("inference.html.j2", inference=table)
