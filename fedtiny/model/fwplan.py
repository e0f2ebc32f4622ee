"""The C firmware's view of a model, from its tools (``make -C firmware tools``, firmware/tools/): the int8
interpreter's verify and arena plan on the host (``ft_plan``), and instructions per inference on the emulated
Cortex-M4F (``bench_model.elf`` in QEMU mps2-an386 with ``-icount``: portable kernels and, where the firmware has
them, the DSP kernels)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: the firmware tree of a source checkout (fedtiny is installed editable from it)
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
BUILD_HINT = "make -C firmware tools"
BENCH_MAGIC = 0xBE9C4D0D
BENCH_MODEL_MAX = 1024 * 1024  # firmware/tools/bench_model.c: BENCH_MODEL_MAX


@dataclass(frozen=True)
class FirmwarePlan:
    """What ft_plan prints for a model the firmware accepts."""

    arena_bytes: int
    macs: int
    ops: tuple[str, ...]
    kernels: str  # "portable" or "optimized" (the arena then includes the DSP kernels' scratch)
    n_ops: int = 0  # operators (FT_TFL_MAX_OPS must be at least this)
    n_tensors: int = 0  # tensors (FT_TFL_MAX_TENSORS must be at least this)


@dataclass(frozen=True)
class BenchResult:
    """Instructions per inference on the emulated Cortex-M4F; ``optimized`` is None without DSP kernels."""

    arena_bytes: int
    macs: int
    portable: int
    optimized: int | None
    per_op: tuple[tuple[str, int, int | None], ...]


def _tool(env: str, rel: str) -> Path | None:
    p = Path(os.environ[env]) if os.environ.get(env) else FIRMWARE_DIR / "build" / "tools" / rel
    return p if p.is_file() else None


def plan_tool() -> Path | None:
    """``$FEDTINY_FT_PLAN`` or firmware/build/tools/ft_plan, if built."""
    return _tool("FEDTINY_FT_PLAN", "ft_plan")


def dsp_plan_tool() -> Path | None:
    """``$FEDTINY_FT_PLAN_DSP`` or firmware/build/tools/ft_plan_dsp (the planner built with the DSP kernels,
    FT_TFL_OPTIMIZED=1: the arena of a Cortex-M4/M7/M33 build), if built."""
    return _tool("FEDTINY_FT_PLAN_DSP", "ft_plan_dsp")


def bench_elf() -> Path | None:
    """``$FEDTINY_BENCH_ELF`` or firmware/build/tools/bench_model.elf, if built."""
    return _tool("FEDTINY_BENCH_ELF", "bench_model.elf")


def firmware_plan(model: bytes, tool: Path | None = None) -> FirmwarePlan | str:
    """The firmware's plan of ``model``, or the reason it refuses the model. FileNotFoundError without the tool."""
    tool = tool or plan_tool()
    if tool is None:
        raise FileNotFoundError(f"the firmware's planner tool is not built: {BUILD_HINT}")
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        r = subprocess.run([str(tool), f.name], capture_output=True, text=True, timeout=60)
    if r.returncode == 1 and r.stdout.startswith("refused "):
        return r.stdout[len("refused ") :].strip()
    if r.returncode != 0:
        raise RuntimeError(f"{tool}: exit {r.returncode}: {r.stderr.strip()}")
    kv: dict[str, str] = {}
    ops: list[str] = []
    for line in r.stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key == "op":
            ops.append(rest.split()[1])
        else:
            kv[key] = rest
    return FirmwarePlan(
        int(kv["arena_bytes"]),
        int(kv["macs"]),
        tuple(ops),
        kv.get("kernels", "portable"),
        int(kv.get("ops", len(ops))),
        int(kv.get("tensors", 0)),
    )


def _symbols(elf: Path, names: tuple[str, ...]) -> dict[str, int]:
    nm = shutil.which("arm-none-eabi-nm")
    if nm is None:
        raise FileNotFoundError("arm-none-eabi-nm not found (gcc-arm-none-eabi)")
    out = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout
    syms = {
        p[2]: int(p[0], 16) for p in (ln.split() for ln in out.splitlines()) if len(p) == 3 and p[2] in names
    }
    missing = [n for n in names if n not in syms]
    if missing:
        raise RuntimeError(f"{elf}: no symbol {missing[0]}")
    return syms


def bench_instructions(model: bytes, elf: Path | None = None, timeout: float = 300) -> BenchResult | str:
    """Instructions per inference in QEMU (``-icount``, deterministic), or the firmware's refusal reason."""
    elf = elf or bench_elf()
    if elf is None:
        raise FileNotFoundError(f"the benchmark firmware is not built: {BUILD_HINT}")
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise FileNotFoundError("qemu-system-arm not found")
    if len(model) > BENCH_MODEL_MAX:
        return f"model of {len(model)} bytes larger than the benchmark firmware's buffer ({BENCH_MODEL_MAX} bytes)"
    syms = _symbols(elf, ("ft_bench_model", "ft_bench_cfg"))
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        cfg = (len(model) << 32) | BENCH_MAGIC
        cmd = [qemu, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-icount", "shift=6"]
        cmd += ["-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        cmd += ["-device", f"loader,file={f.name},addr={syms['ft_bench_model']:#x},force-raw=on"]
        cmd += ["-device", f"loader,addr={syms['ft_bench_cfg']:#x},data={cfg:#x},data-len=8"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("BENCH ")]
    for ln in lines:
        if ln.startswith("refused "):
            return ln[len("refused ") :].strip()
    if r.returncode != 0:
        raise RuntimeError(f"{elf} in QEMU: exit {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}")
    kv: dict[str, str] = {}
    per_op: list[tuple[str, int, int | None]] = []
    for ln in lines:
        key, _, rest = ln.partition(" ")
        if key == "op":
            _, name, port, opt = rest.split()
            per_op.append((name, int(port), None if opt == "n/a" else int(opt)))
        else:
            kv[key] = rest
    opt_total = kv["optimized"]
    return BenchResult(
        int(kv["arena_bytes"]),
        int(kv["macs"]),
        int(kv["portable"]),
        None if opt_total == "n/a" else int(opt_total),
        tuple(per_op),
    )
