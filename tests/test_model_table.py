"""The measured inference costs: fedtiny/fleet/inference_costs.json follows the benchmark table's schema, the
board profiles take their inference cost from it, and the firmware tools behind the table (ft_plan on the host,
bench_model.elf in QEMU -icount) measure a real model."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedtiny.errors import ScenarioError
from fedtiny.fleet import boards
from fedtiny.fleet.boards import BOARDS, COST_KEYS, COSTS_SCHEMA, check_costs

ROOT = Path(__file__).resolve().parent.parent
FW = ROOT / "firmware"


def _model_table():  # benchmarks/ is not a package
    spec = importlib.util.spec_from_file_location("model_table", ROOT / "benchmarks" / "model_table.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["model_table"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_costs_json_matches_the_table_schema() -> None:
    doc = json.loads(boards.INFERENCE_COSTS_FILE.read_text())
    check_costs(doc)
    assert set(doc["models"]) == {"vibration", "kws", "digits"}
    mt = _model_table()
    assert doc["cycles_per_instruction"] == mt.CPI
    for name, m in doc["models"].items():
        assert set(m) == set(COST_KEYS), name
        # the table's own writer produces exactly this document from its rows
        row = {"model": name, **m, "per_op": []}
        assert mt.costs_doc([row])["models"][name] == m
        assert m["instructions_portable"] > m["macs"] > 0  # at least one instruction per multiply-accumulate
        if m["instructions_optimized"] is not None:
            assert m["instructions_optimized"] < m["instructions_portable"]
        assert m["arena_firmware_bytes"] <= m["arena_tflm_bytes"]  # issue 11's goal for the planner
        assert 0.5 < m["int8_accuracy"] <= 1.0


def test_boards_take_inference_cost_from_the_measurements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads(boards.INFERENCE_COSTS_FILE.read_text())
    m = doc["models"]["vibration"]
    insn = m["instructions_optimized"] or m["instructions_portable"]
    b = BOARDS["nano33ble"]
    cpi = doc["cycles_per_instruction"]
    assert b.inference_seconds("vibration") == pytest.approx(insn * cpi / b.clock_hz)
    assert b.inference_seconds("vibration", optimized=False) == pytest.approx(
        m["instructions_portable"] * cpi / b.clock_hz
    )
    rp = BOARDS["rp2040"]  # no DSP extension: the portable kernels' count
    assert rp.inference_seconds("vibration") == pytest.approx(m["instructions_portable"] * cpi / rp.clock_hz)
    assert b.inference_energy_j("vibration") == pytest.approx(
        insn * cpi * b.energy_per_mac_j * b.macs_per_cycle
    )
    # another measurement file: the profiles follow it
    doc["models"]["vibration"]["instructions_optimized"] = 2 * insn
    doc["cycles_per_instruction"] = 1.5
    f = tmp_path / "costs.json"
    f.write_text(json.dumps(doc))
    monkeypatch.setattr(boards, "INFERENCE_COSTS_FILE", f)
    boards.inference_costs.cache_clear()
    try:
        assert b.inference_seconds("vibration") == pytest.approx(2 * insn * 1.5 / b.clock_hz)
        with pytest.raises(ScenarioError, match="no measured inference cost for model 'nope'"):
            b.inference_seconds("nope")
    finally:
        boards.inference_costs.cache_clear()


def test_bad_costs_are_refused_naming_the_key() -> None:
    good = json.loads(boards.INFERENCE_COSTS_FILE.read_text())
    with pytest.raises(ScenarioError, match="key 'schema'"):
        check_costs({**good, "schema": "other"})
    with pytest.raises(ScenarioError, match="key 'cycles_per_instruction'"):
        check_costs({**good, "cycles_per_instruction": 0})
    bad = json.loads(json.dumps(good))
    bad["models"]["kws"]["macs"] = "many"
    with pytest.raises(ScenarioError, match=r"key 'models\.kws\.macs': expected int"):
        check_costs(bad)
    assert COSTS_SCHEMA == good["schema"]


def test_firmware_tools_measure_a_model(tiny_tflite: bytes) -> None:
    """ft_plan's arena for a real converted model is the firmware's own plan (no larger than TFLite Micro's);
    in QEMU the instruction count is deterministic (-icount) and the DSP kernels, where present, run fewer."""
    from fedtiny.model import fwplan
    from fedtiny.model.info import min_arena_bytes, model_info

    if not shutil.which("cc"):
        pytest.skip("no host C compiler (cc)")
    subprocess.run(["make", "-s", "-C", str(FW), "build/tools/ft_plan"], check=True, timeout=300)
    plan = fwplan.firmware_plan(tiny_tflite, FW / "build" / "tools" / "ft_plan")
    assert not isinstance(plan, str), plan
    assert plan.ops[0] == "CONV_2D" and plan.ops[-1] == "FULLY_CONNECTED"
    assert 0 < plan.arena_bytes <= min_arena_bytes(tiny_tflite)
    assert (
        fwplan.firmware_plan(b"\x00" * 64, FW / "build" / "tools" / "ft_plan") == "not a .tflite flatbuffer"
    )
    assert f"arena fw: {plan.arena_bytes} bytes" in "\n".join(model_info(tiny_tflite).lines())
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("instruction counts need gcc-arm-none-eabi and qemu-system-arm")
    subprocess.run(["make", "-s", "-C", str(FW), "build/tools/bench_model.elf"], check=True, timeout=300)
    elf = FW / "build" / "tools" / "bench_model.elf"
    r1 = fwplan.bench_instructions(tiny_tflite, elf)
    r2 = fwplan.bench_instructions(tiny_tflite, elf)
    assert not isinstance(r1, str), r1
    assert r1 == r2  # deterministic
    assert r1.macs == plan.macs and r1.portable > r1.macs
    assert [o for o, _, _ in r1.per_op] == list(plan.ops)
    assert sum(p for _, p, _ in r1.per_op) <= r1.portable * 1.01
    if r1.optimized is not None:
        assert r1.optimized < r1.portable


def test_report_shows_the_measured_table() -> None:
    from fedtiny.report.inference_html import inference_table_html

    doc = boards.inference_costs()
    page = inference_table_html("kws")
    assert "Inference on the boards (measured)" in page
    for name, m in doc["models"].items():
        assert f"<th>{name}</th>" in page and f"{m['instructions_portable']:,}" in page
    b = BOARDS["stm32h7"]
    assert f"{1e3 * b.inference_seconds('kws'):.2f} ms" in page
