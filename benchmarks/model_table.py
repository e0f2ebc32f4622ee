"""The benchmark table for fedtiny's reference models (vibration, kws, digits) and any ``.tflite`` given:

* model size; arena: the C firmware's planner (firmware/tools/ft_plan: portable kernels; the DSP build adds its
  kernels' scratch) against TFLite Micro's smallest accepted arena (``fedtiny.model.info.min_arena_bytes``);
* instructions per inference on the emulated Cortex-M4F (QEMU mps2-an386, ``-icount``: deterministic), with the
  portable kernels and the DSP kernels (``FT_TFL_OPTIMIZED``; "n/a" where the firmware has none);
* latency at each board profile's clock (``fedtiny.fleet.boards``) at the stated cycles per instruction, and
  energy per inference from the profile's energy per cycle;
* int8 accuracy (TFLite Micro) on the task's factory test data (reference models; "n/a" for a bare .tflite).

The reference models are the cached base models of scenarios/quickstart.toml (vibration),
scenarios/kws_new_speakers.toml (kws) and the default digits spec (trained on a cache miss: minutes).

    .venv/bin/python benchmarks/model_table.py [MODEL.tflite ...] [--no-reference] [--out DIR] [--update-costs]

``--out DIR`` writes model_table.csv (one row per model and board) and model_table.json; ``--update-costs``
rewrites fedtiny/fleet/inference_costs.json (the reference models' figures, which the board profiles read).
Needs ``make -C firmware tools`` (built here when missing), arm-none-eabi-gcc and qemu-system-arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fedtiny.fleet.boards import BOARDS, COSTS_SCHEMA, INFERENCE_COSTS_FILE, check_costs
from fedtiny.model import fwplan

#: cycles per executed instruction behind every latency: a single-issue Cortex-M4 at zero flash wait states runs
#: most data-processing instructions in 1 cycle (loads 2, taken branches 2-4, SMLAD 1); an M7 dual-issues (faster),
#: the M0+ and the ESP32-S3's Xtensa run other instruction sets, so there the figure is an approximation.
CPI = 1.0
REFERENCE = {
    "vibration": "scenarios/quickstart.toml",
    "kws": "scenarios/kws_new_speakers.toml",
    "digits": None,
}


def reference_models(log: Any) -> dict[str, tuple[bytes, float, int]]:
    """name -> (int8 .tflite, int8 accuracy on the factory test set, test samples)."""
    from fedtiny.model.build import ModelSpec, build_base_model
    from fedtiny.plan import load_scenario
    from fedtiny.plan.resolve import model_spec

    out = {}
    for name, scenario in REFERENCE.items():
        spec = model_spec(load_scenario(ROOT / scenario)) if scenario else ModelSpec(task=name)
        m = build_base_model(spec, log=log)
        out[name] = (m.tflite, m.int8_accuracy, spec.test_samples)
    return out


def ensure_tools() -> None:
    if fwplan.plan_tool() is None or fwplan.bench_elf() is None:
        subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "tools"], check=True)


def measure(name: str, model: bytes, accuracy: float | None, test_samples: int | None) -> dict[str, Any]:
    from fedtiny.model.info import min_arena_bytes

    plan = fwplan.firmware_plan(model)
    if isinstance(plan, str):
        return {"model": name, "model_bytes": len(model), "refused": plan}
    bench = fwplan.bench_instructions(model)
    if isinstance(bench, str):
        return {"model": name, "model_bytes": len(model), "refused": bench}
    return {
        "model": name,
        "model_bytes": len(model),
        "arena_firmware_bytes": plan.arena_bytes,
        "arena_firmware_optimized_bytes": bench.arena_bytes if bench.optimized is not None else None,
        "arena_tflm_bytes": min_arena_bytes(model),
        "macs": plan.macs,
        "instructions_portable": bench.portable,
        "instructions_optimized": bench.optimized,
        "int8_accuracy": accuracy,
        "test_samples": test_samples,
        "per_op": [{"op": o, "portable": p, "optimized": q} for o, p, q in bench.per_op],
    }


def board_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Latency and energy per board: the DSP kernels' count on boards with the DSP extension (when measured),
    the portable kernels' elsewhere (the ESP32-S3's Xtensa and the M0+ have no Armv7E-M DSP instructions)."""
    out = []
    for b in BOARDS.values():
        dsp = b.arm_dsp and row["instructions_optimized"] is not None
        cycles = (row["instructions_optimized"] if dsp else row["instructions_portable"]) * CPI
        out.append(
            {
                "model": row["model"],
                "board": b.name,
                "clock_mhz": b.clock_hz / 1e6,
                "kernels": "optimized" if dsp else "portable",
                "latency_ms": 1e3 * cycles / b.clock_hz,
                "energy_uj": 1e6 * cycles * b.energy_per_cycle_j,
            }
        )
    return out


def _n(v: Any, fmt: str = ",") -> str:
    return "n/a" if v is None else format(v, fmt)


def print_table(rows: list[dict[str, Any]]) -> None:
    hdr = (
        "model",
        "size KiB",
        "arena fw/opt/TFLM B",
        "MACs",
        "insn portable",
        "insn DSP",
        "ratio",
        "int8 acc",
    )
    print(" | ".join(hdr))
    for r in rows:
        if "refused" in r:
            print(f"{r['model']} | {r['model_bytes'] / 1024:.1f} | refused by the firmware: {r['refused']}")
            continue
        opt = r["instructions_optimized"]
        ratio = f"{r['instructions_portable'] / opt:.2f}x" if opt else "n/a"
        acc = "n/a" if r["int8_accuracy"] is None else f"{r['int8_accuracy']:.4f} (n={r['test_samples']})"
        arenas = f"{r['arena_firmware_bytes']}/{_n(r['arena_firmware_optimized_bytes'], 'd')}/{r['arena_tflm_bytes']}"
        print(
            f"{r['model']} | {r['model_bytes'] / 1024:.1f} | {arenas} | {r['macs']:,} | "
            f"{r['instructions_portable']:,} | {_n(opt)} | {ratio} | {acc}"
        )
    print(
        f"\nlatency ms / energy uJ per inference (DSP kernels on M4/M7 boards), at {CPI} cycle per instruction"
    )
    boards = list(BOARDS.values())
    print("model | " + " | ".join(f"{b.name} {b.clock_hz / 1e6:g} MHz" for b in boards))
    for r in rows:
        if "refused" in r:
            continue
        cells = [f"{x['latency_ms']:.2f} / {x['energy_uj']:.1f}" for x in board_rows(r)]
        print(f"{r['model']} | " + " | ".join(cells))


def costs_doc(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keep = (
        "model_bytes arena_firmware_bytes arena_firmware_optimized_bytes arena_tflm_bytes macs "
        "instructions_portable instructions_optimized int8_accuracy test_samples"
    ).split()
    return check_costs(
        {
            "schema": COSTS_SCHEMA,
            "measured_with": "benchmarks/model_table.py: QEMU mps2-an386 -icount (Cortex-M4F), arm-none-eabi-gcc -Os",
            "cycles_per_instruction": CPI,
            "models": {r["model"]: {k: r[k] for k in keep} for r in rows if "refused" not in r},
        }
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path, help=".tflite files to add to the table")
    ap.add_argument("--no-reference", action="store_true", help="only the models given")
    ap.add_argument("--out", type=Path, help="write model_table.csv and model_table.json here")
    ap.add_argument(
        "--update-costs", action="store_true", help=f"rewrite {INFERENCE_COSTS_FILE.relative_to(ROOT)}"
    )
    a = ap.parse_args(argv)
    for p in a.models:
        if not p.is_file():
            print(f"model_table: {p}: no such file (expected a .tflite)", file=sys.stderr)
            return 2
    ensure_tools()
    items: list[tuple[str, bytes, float | None, int | None]] = []
    if not a.no_reference:
        items += [
            (n, m, acc, ns)
            for n, (m, acc, ns) in reference_models(lambda s: print(s, file=sys.stderr)).items()
        ]
    items += [(p.name, p.read_bytes(), None, None) for p in a.models]
    rows = [measure(*it) for it in items]
    print_table(rows)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        per_board = [br for r in rows if "refused" not in r for br in board_rows(r)]
        with open(a.out / "model_table.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(per_board[0]) if per_board else ["model"])
            w.writeheader()
            w.writerows(per_board)
        doc = {"cycles_per_instruction": CPI, "models": rows, "boards": per_board}
        (a.out / "model_table.json").write_text(json.dumps(doc, indent=1) + "\n")
    if a.update_costs:
        if a.no_reference:
            print(
                "model_table: --update-costs needs the reference models (drop --no-reference)",
                file=sys.stderr,
            )
            return 2
        ref = [r for r in rows if r["model"] in REFERENCE]
        INFERENCE_COSTS_FILE.write_text(json.dumps(costs_doc(ref), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
