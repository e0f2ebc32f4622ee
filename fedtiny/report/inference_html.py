"""The report's inference table: the measured figures of fedtiny/fleet/inference_costs.json (written by
benchmarks/model_table.py) and what they cost on each board profile."""

from __future__ import annotations

import html

from fedtiny.errors import FedTinyError
from fedtiny.fleet.boards import BOARDS, INFERENCE_COSTS_FILE, cycles_per_instruction, inference_costs


def inference_table_html(task: str = "") -> str:
    """An HTML section with the table, or "" when the measured figures are missing."""
    if not INFERENCE_COSTS_FILE.exists():
        return ""
    try:
        doc = inference_costs()
    except FedTinyError:
        return ""
    boards = list(BOARDS.values())
    head = "".join(f"<th>{html.escape(b.name)} ({b.clock_hz / 1e6:g} MHz)</th>" for b in boards)
    rows = []
    for name, m in doc["models"].items():
        opt = m["instructions_optimized"]
        acc = "n/a" if m["int8_accuracy"] is None else f"{100 * m['int8_accuracy']:.1f}%"
        cells = "".join(
            f"<td>{1e3 * b.inference_seconds(name):.2f} ms / {1e6 * b.inference_energy_j(name):.1f} µJ</td>"
            for b in boards
        )
        style = ' style="font-weight:bold"' if name == task else ""
        rows.append(
            f"<tr{style}><th>{html.escape(name)}</th><td>{m['model_bytes'] / 1024:.1f}</td>"
            f"<td>{m['arena_firmware_bytes']:,}</td><td>{m['arena_tflm_bytes']:,}</td><td>{m['macs']:,}</td>"
            f"<td>{m['instructions_portable']:,}</td><td>{'n/a' if opt is None else f'{opt:,}'}</td>"
            f"<td>{acc}</td>{cells}</tr>"
        )
    return (
        "<h2>Inference on the boards (measured)</h2><table><tr><th>model</th><th>size KiB</th>"
        "<th>arena fedtiny fw (B)</th><th>arena TFLite Micro (B)</th><th>MACs</th><th>instructions portable</th>"
        f"<th>instructions DSP</th><th>int8 accuracy</th>{head}</tr>{''.join(rows)}</table>"
        f'<p class="note">Instructions per inference measured on the emulated Cortex-M4F (QEMU -icount, '
        f"{html.escape(str(doc.get('measured_with', '')))}); latency at each board's clock at "
        f"{cycles_per_instruction():g} cycle per instruction (the DSP kernels on Cortex-M4/M7 boards, the portable ones elsewhere), energy from the board "
        "profile's energy per cycle.</p>"
    )
