"""Which firmware build a model needs on a board (``fedtiny info MODEL --board NAME``).

The C firmware's limits are compile-time options (firmware/core/fedtiny_config.h, each overridden with
``make -C firmware FT_DEFS="-DNAME=value"``; firmware/README.md "Build options" gives every range). This module
sizes the ones a model decides: head classes and features, the interpreter's tensors, operators and arena, the
image slot, and the feature cache where the board's RAM is short; then estimates the build's RAM and flash against
the board profile (fedtiny/fleet/boards.py). The RAM estimate is the sum of the firmware's static buffers on a
32-bit target (firmware/README.md "Build options": what each option costs), calibrated on the QEMU image's
``arm-none-eabi-size``; it is an estimate, not a link map.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedtiny.fleet.boards import Board
    from fedtiny.model.info import ModelInfo

#: fedtiny_config.h's defaults
DEFAULTS: dict[str, int] = {
    "FT_MAX_CLASSES": 16,
    "FT_MAX_DIM": 128,
    "FT_CACHE_CAPACITY": 200,
    "FT_SLOT_SIZE": 256 * 1024,
    "FT_MAX_PAYLOAD": 4096,
    "FT_TFL_MAX_TENSORS": 128,
    "FT_TFL_MAX_OPS": 64,
    "FT_TFL_ARENA_SIZE": 96 * 1024,
    "FT_TFL_MAX_MACS": 64_000_000,
    "FT_MAX_STAGED_INPUT": 0,  # on a microcontroller port (hosted builds: 32,768)
    "FT_USE_FLOAT": 1,
}
#: the options' upper limits (firmware/README.md "Build options"; u16 fields on the wire, 0xFFFF = "no label")
LIMITS: dict[str, int] = {
    "FT_MAX_CLASSES": 0xFFFE,
    "FT_MAX_DIM": 0xFFFF,
    "FT_CACHE_CAPACITY": 0xFFFF,
    "FT_TFL_MAX_TENSORS": 0x7FFF,
    "FT_TFL_MAX_OPS": 0xFFFF,
}
FLASH_PAGE = 4096  # FT_FLASH_PAGE_SIZE of the profiled boards (nRF52840, ESP32-S3, STM32H7, RP2040 sectors)
SIGNED_OVERHEAD = 512  # room for a signed (MCUboot) image's header, protected TLVs and TLVs around the model
ARENA_ROUND = 256
#: measured on the QEMU image (make -C firmware size, Cortex-M4F -Os, interpreter compiled in): .text
CODE_BYTES = 80 * 1024
STACK_BYTES = 16 * 1024  # the ports' reserved stack
META_BYTES = 4 * FLASH_PAGE  # FT_META_PAGES + FT_KEY_PAGES pages next to the slots


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def ram_parts(
    C: int, D: int, cache: int, payload: int, arena: int, tensors: int, ops: int, staged: int = 0
) -> dict[str, int]:
    """Static RAM of a build (bytes, 32-bit target) by part: the sizes of the firmware's buffers
    (ft_head.h, ft_cache.h, ft_train.h, ft_tfl_interp.h, ft_link.h), calibrated on the default build."""
    cd = C * D
    return {
        "arena": arena,  # g_arena[FT_TFL_ARENA_SIZE]
        "model": 74 * tensors + 144 * ops + 160,  # ft_tfl_model: 72 B + 2 B per tensor, 144 B per op
        "cache": cache * (D + 2) + 12,  # int8 features + u16 label per slot
        # the running and the scratch int8 heads, the float head
        "heads": 2 * (cd + 16 * C + 20) + 4 * cd + 4 * C + 4,
        "training": 12 * cd + 16 * C + 4 * D + 14 * cache + 8,  # gradient, velocity, anchor; order, set
        "patches": 2 * (20 + 8 * C + cd),  # SET_HEAD / image staging, the factory head patch
        "link": 3 * payload + 320,  # frame buffers
        "staged input": staged + 8 if staged else 0,  # FT_MAX_STAGED_INPUT
        "other": 2716 + 828 + STACK_BYTES,  # the device's other state, data, the stack
    }


@dataclass
class BoardFit:
    """The build a model needs on a board: option values (tight), the RAM/flash estimate, the verdict."""

    board: Board
    options: dict[str, int]
    notes: dict[str, str]
    ram: dict[str, int]
    flash: dict[str, int]
    fits: bool
    why: list[str] = field(default_factory=list)

    @property
    def ram_bytes(self) -> int:
        return sum(self.ram.values())

    @property
    def flash_bytes(self) -> int:
        return sum(self.flash.values())

    def ft_defs(self) -> str:
        """The -D flags of every option that differs from fedtiny_config.h's default."""
        return " ".join(f"-D{k}={v}" for k, v in self.options.items() if v != DEFAULTS.get(k))

    def build_command(self, model_path: Path) -> str:
        defs = self.ft_defs()
        name = model_path.stem.replace(" ", "_") or "model"
        args = [f"B=build/{name}", "THIRD_PARTY=build/third_party"]
        if defs:
            args.append(f'FT_DEFS="{defs}"')  # digits and names only: nothing to quote
        args.append("FT_FACTORY_MODEL=" + shlex.quote(str(model_path.resolve())))
        args += [f"build/{name}/host/fedtiny-fw", f"build/{name}/mps2/fw.elf"]
        return "make -C firmware " + " ".join(args)


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def board_fit(
    info: ModelInfo, board: Board, arena: int, arena_how: str, tensors: int, ops: int, refusal: str = ""
) -> BoardFit:
    """Size the options for ``info``'s model on ``board``; ``arena`` is the firmware's plan for the board's
    kernels (``arena_how`` says whose figure it is); ``refusal``: why the firmware refuses the model, if it does."""
    C, D = info.head_classes, info.head_features
    raw = 1
    for n in info.io.input_shape:
        raw *= int(n)
    opts = {
        "FT_MAX_CLASSES": C,
        "FT_MAX_DIM": D,
        "FT_TFL_ARENA_SIZE": _round_up(max(arena, 1), ARENA_ROUND),
        "FT_TFL_MAX_TENSORS": tensors,
        "FT_TFL_MAX_OPS": ops,
        "FT_SLOT_SIZE": _round_up(info.bytes + SIGNED_OVERHEAD, FLASH_PAGE),
        "FT_CACHE_CAPACITY": DEFAULTS["FT_CACHE_CAPACITY"],
        "FT_MAX_PAYLOAD": DEFAULTS["FT_MAX_PAYLOAD"],
    }
    sample = raw * (4 if info.io.input_dtype == "float32" else 1)  # one raw input's bytes on the wire
    one_frame = 8 + sample <= DEFAULTS["FT_MAX_PAYLOAD"]
    if not one_frame:  # sent in pieces (STAGE_INPUT) into a buffer of its size
        opts["FT_MAX_STAGED_INPUT"] = sample
    notes = {
        "FT_MAX_CLASSES": f"head outputs (classes); default {DEFAULTS['FT_MAX_CLASSES']}",
        "FT_MAX_DIM": f"head inputs (features); default {DEFAULTS['FT_MAX_DIM']}",
        "FT_TFL_ARENA_SIZE": f"{arena_how}, rounded up to {ARENA_ROUND} B; default {DEFAULTS['FT_TFL_ARENA_SIZE']}",
        "FT_TFL_MAX_TENSORS": f"the model's tensors; default {DEFAULTS['FT_TFL_MAX_TENSORS']}",
        "FT_TFL_MAX_OPS": f"the model's operators; default {DEFAULTS['FT_TFL_MAX_OPS']}",
        "FT_SLOT_SIZE": f"the model as a full image ({info.bytes} B + {SIGNED_OVERHEAD} B for a signed image's "
        f"header and TLVs) in whole {FLASH_PAGE} B pages; a larger image needs larger slots; default "
        f"{DEFAULTS['FT_SLOT_SIZE']}",
        "FT_CACHE_CAPACITY": f"cached samples of {D} features; default {DEFAULTS['FT_CACHE_CAPACITY']}",
        "FT_MAX_PAYLOAD": (
            f"default; one raw sample ({sample} B) needs {8 + sample} B in one PUSH_SAMPLES frame"
            if one_frame
            else f"default; one raw sample ({sample} B) is larger than a frame: staged in pieces (STAGE_INPUT)"
        ),
    }
    if not board.fpu:  # float32 training would be emulated in software: the integer trainer only
        opts["FT_USE_FLOAT"] = 0
        notes["FT_USE_FLOAT"] = "no FPU: the fixed-point trainer only (TRAIN flag FIXED); default 1"
    if not one_frame:
        notes["FT_MAX_STAGED_INPUT"] = f"one raw input ({sample} B) staged in pieces; default 0 on a board"
    why: list[str] = [f"the fedtiny C firmware refuses the model: {refusal}"] if refusal else []
    if arena < 0:
        why.append("TFLite Micro cannot allocate the model's tensors within 1 MiB of arena")
    for k, lim in LIMITS.items():
        if opts.get(k, 0) > lim:
            why.append(f"{k}={opts[k]} is above the firmware's limit {lim} (firmware/README.md)")

    def ram_now() -> dict[str, int]:
        return ram_parts(
            C,
            D,
            opts["FT_CACHE_CAPACITY"],
            opts["FT_MAX_PAYLOAD"],
            opts["FT_TFL_ARENA_SIZE"],
            tensors,
            ops,
            opts.get("FT_MAX_STAGED_INPUT", 0),
        )

    ram = ram_now()
    total = sum(ram.values())
    if total > board.ram_bytes:
        per_slot = (D + 2) + 14
        rest = total - opts["FT_CACHE_CAPACITY"] * per_slot
        cap = (board.ram_bytes - rest) // per_slot
        if cap >= 16:  # a cache this small still trains; fewer is not worth a build
            opts["FT_CACHE_CAPACITY"] = min(cap, DEFAULTS["FT_CACHE_CAPACITY"])
            notes["FT_CACHE_CAPACITY"] += f" does not fit {board.name}'s RAM: {opts['FT_CACHE_CAPACITY']} fit"
            ram = ram_now()
        else:
            head = ram["heads"] + ram["training"] + ram["patches"] - 14 * opts["FT_CACHE_CAPACITY"]
            why.append(
                f"needs about {_kib(total)} of RAM, {board.name} has {_kib(board.ram_bytes)}: the {C}x{D} head "
                f"alone costs about {_kib(head)} (about 20 B per weight: int8 heads, the float head and its "
                f"training state) and the arena {_kib(opts['FT_TFL_ARENA_SIZE'])}; use fewer classes or features, "
                "or a board with more RAM"
            )
    flash = {
        "code": CODE_BYTES,
        "factory model": info.bytes,
        "slots": 2 * opts["FT_SLOT_SIZE"],
        "metadata": META_BYTES,
    }
    if sum(flash.values()) > board.flash_bytes:
        why.append(
            f"needs about {_kib(sum(flash.values()))} of flash, {board.name} has {_kib(board.flash_bytes)}"
        )
    return BoardFit(board, opts, notes, ram, flash, not why, why)


def board_plan(model: bytes, info: ModelInfo, board: Board) -> tuple[int, str, int, int, str]:
    """(arena, whose figure it is, tensors, operators, refusal) for ``board``'s kernels: the firmware planner's
    (firmware/build/tools/ft_plan_dsp on a board with the DSP extension, ft_plan elsewhere), else TFLite
    Micro's. ``refusal`` is the firmware's reason when it refuses the model for anything but its default
    tensor/operator limits (which the build options raise), else ""."""
    import subprocess

    from fedtiny.model import fwplan
    from fedtiny.model.flatbuffer import builtin_name, tensor_count

    tensors, ops = tensor_count(model), len(info.ops)
    tools = [(fwplan.dsp_plan_tool(), "with the DSP kernels")] if board.arm_dsp else []
    tools.append((fwplan.plan_tool(), "with the portable kernels"))
    missing = f"the firmware's planner is not built: {fwplan.BUILD_HINT}"
    for tool, kernels in tools:
        if tool is None:
            continue
        try:
            plan = fwplan.firmware_plan(model, tool)
        except (OSError, RuntimeError, subprocess.SubprocessError):
            continue
        if isinstance(plan, str):
            if "FT_TFL_MAX_TENSORS" in plan or "FT_TFL_MAX_OPS" in plan:
                missing = "the firmware's planner is built with the default tensor/operator limits"
                break  # TFLite Micro's figure below
            import re

            named = re.sub(r"BUILTIN_(\d+)", lambda m: builtin_name(int(m.group(1))), plan)
            return info.arena_bytes, "", tensors, ops, named
        how = f"the firmware's arena plan {kernels}, {plan.arena_bytes} B"
        if board.arm_dsp and kernels.endswith("portable kernels"):
            how += f" ({fwplan.BUILD_HINT} for the DSP kernels' figure)"
        return plan.arena_bytes, how, plan.n_tensors or tensors, plan.n_ops or ops, ""
    how = f"TFLite Micro's arena, {info.arena_bytes} B ({missing})"
    return info.arena_bytes, how, tensors, ops, ""


def fit_lines(fit: BoardFit, model_path: Path) -> list[str]:
    """What ``fedtiny info MODEL --board NAME`` prints after the model's own lines."""
    b = fit.board
    kernels = "DSP kernels (FT_TFL_OPTIMIZED=1, its default there)" if b.arm_dsp else "portable kernels"
    out = [
        f"board:    {b.name}, {b.mcu}: {_kib(b.ram_bytes)} RAM, {_kib(b.flash_bytes)} flash; {kernels}",
        "options:  the build this model needs (fedtiny_config.h's names; ranges in firmware/README.md):",
    ]
    width = max(len(k) for k in fit.options)
    for k, v in fit.options.items():
        d = DEFAULTS.get(k)
        mark = "  " if v == d else "* "
        out.append(f"  {mark}{k:<{width}} {v:>8}  {fit.notes[k]}")
    out.append("          (* differs from the default: set in FT_DEFS below)")
    parts = ", ".join(f"{k} {_kib(v)}" for k, v in fit.ram.items() if v)
    verdict = "fits" if fit.ram_bytes <= b.ram_bytes else "does NOT fit"
    out.append(f"RAM:      about {_kib(fit.ram_bytes)} of {_kib(b.ram_bytes)}: {verdict} ({parts})")
    fparts = ", ".join(f"{k} {_kib(v)}" for k, v in fit.flash.items())
    verdict = "fits" if fit.flash_bytes <= b.flash_bytes else "does NOT fit"
    out.append(f"flash:    about {_kib(fit.flash_bytes)} of {_kib(b.flash_bytes)}: {verdict} ({fparts})")
    if fit.fits:
        out.append(f"fits:     yes, the model fits {b.name} with these options")
        out.append(f"build:    {fit.build_command(model_path)}")
        out.append(
            "          (the host firmware and the QEMU image, the model compiled in as the factory model; a board's "
            "port takes the same -D flags: ESP-IDF in main/CMakeLists.txt, arduino-cli as compiler.c.extra_flags)"
        )
    else:
        for w in fit.why:
            out.append(f"fits:     no: {w}")
    return out
