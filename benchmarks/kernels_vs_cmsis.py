"""fedtiny's int8 kernels against Arm's CMSIS-NN, layer by layer, counted in QEMU with ``-icount``.

For every operator of an int8 .tflite that the C firmware runs, the harness (benchmarks/cmsis/kvc.c, linked with
the firmware's interpreter sources from firmware/core, unchanged) runs on the same input tensor (the interpreter's
own, from the portable kernels): fedtiny's portable kernel, fedtiny's DSP-build kernel (the one ft_tfl_interp.c
picks with FT_TFL_OPTIMIZED) and the CMSIS-NN function that TFLite Micro's cmsis_nn kernels call, with the
parameters TFLite Micro computes (per-channel multipliers/shifts, ADD's and SOFTMAX's fixed-point parameters);
fedtiny's kernels read the per-channel multipliers its interpreter computed once into the arena (first invoke).
It counts the instructions of each call, compares each output with the interpreter's bytes and reports each
side's scratch bytes (fedtiny's ``*_dsp_scratch``, CMSIS-NN's ``*_get_buffer_size``).

    .venv/bin/python benchmarks/kernels_vs_cmsis.py [MODEL.tflite ...] [--models reference,mlperf]
        [--cores m4,m7,m33] [--opt=-O2] [--cmsis-nn DIR] [--json FILE]

Models: ``reference`` = fedtiny's shipped int8 reference models (fedtiny/model/reference: kws, vibration);
``mlperf`` = MLPerf Tiny reference architectures (DS-CNN, ResNet-8, MobileNetV1-0.25 96x96, the FC autoencoder)
and a small model with the remaining op kinds (depth multiplier 2, MAX_POOL_2D, broadcast ADD), built with
TensorFlow, random weights, batch 1 (static shapes), int8 post-training quantization, cached under .cache/kernels_vs_cmsis/models.
Cores: m4 = QEMU mps2-an386 (Cortex-M4F), m7 = mps2-an500 (Cortex-M7), m33 = mps2-an505 (Cortex-M33, secure).
Both sides are compiled with the same arm-none-eabi-gcc flags (``--opt``, default -O2). CMSIS-NN is compiled from
``--cmsis-nn DIR`` / ``$CMSIS_NN_DIR`` (default ../shared/third_party/cmsis-nn from the repository root); without
it, the ARM compiler or QEMU, the script prints one ``SKIP:`` line and exits 0.

Output: a per-layer table per model and core, then one line per model and core:
``<model> whole model: fedtiny <n> instructions, CMSIS-NN <m>, <n/m>x, outputs identical: yes|no`` where n is the
sum of fedtiny's DSP-build counts and m the sum of CMSIS-NN's; an operator CMSIS-NN has no kernel for (MEAN,
QUANTIZE, DEQUANTIZE, RESHAPE, broadcasting ADD: TFLite Micro runs its reference kernel there) counts fedtiny's
DSP-build figure on both sides. "outputs identical" means every operator's output of all three kernels equals the
interpreter's bytes. A core other than m4 gets ``[core]`` after the model name. Then, where the tflite-micro
runtime is installed (``--no-tflm`` skips it), one line per model and core:
``<model> arena: fedtiny <a> B (DSP kernels), TFLite Micro <t> B, within: yes|no`` (a: the firmware's plan with the
DSP kernels, scratch and multipliers included; t: ``fedtiny.model.info.min_arena_bytes``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "cmsis"
FIRMWARE_CORE = ROOT / "firmware" / "core"
CACHE = ROOT / ".cache" / "kernels_vs_cmsis"
DEFAULT_CMSIS = ROOT.parent / "shared" / "third_party" / "cmsis-nn"
ARM_CC = os.environ.get("ARM_CC", "arm-none-eabi-gcc")
QEMU = os.environ.get("QEMU", "qemu-system-arm")
KVC_MAGIC = 0xC3515E1F
KVC_MODEL_MAX = 1536 * 1024  # kvc.c: KVC_MODEL_MAX
TFL_SRC = (
    "ft_tfl_reader.c",
    "ft_tfl_ops.c",
    "ft_tfl_ops_dsp.c",
    "ft_tfl_interp.c",
    "ft_tfl_op_util.c",
    "ft_head.c",
    "ft_status.c",
)
# CMSIS-NN source directories the s8 kernels need (float and f16 files left out)
CMSIS_DIRS = (
    "ConvolutionFunctions",
    "FullyConnectedFunctions",
    "PoolingFunctions",
    "BasicMathFunctions",
    "SoftmaxFunctions",
    "PadFunctions",
    "NNSupportFunctions",
)
# the firmware's limits raised for the larger MLPerf Tiny models (fedtiny_config.h: #ifndef defaults)
FT_DEFS = ("-DFT_TFL_MAX_OPS=128", "-DFT_TFL_MAX_TENSORS=256", "-DFT_TFL_MAX_MACS=400000000u")


@dataclass(frozen=True)
class Core:
    machine: str
    cpu_flags: tuple[str, ...]
    flash: int
    ram: int


CORES = {
    "m4": Core("mps2-an386", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), 0x0, 0x20000000),
    "m7": Core("mps2-an500", ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"), 0x0, 0x20000000),
    "m33": Core(
        "mps2-an505", ("-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"), 0x10000000, 0x38000000
    ),
}

LINKER_SCRIPT = """/* written by benchmarks/kernels_vs_cmsis.py for {machine} */
MEMORY
{{
  FLASH (rx) : ORIGIN = {flash:#x}, LENGTH = 4M
  RAM (rwx)  : ORIGIN = {ram:#x}, LENGTH = 4M
}}
ENTRY(Reset_Handler)
SECTIONS
{{
  .text : {{ KEEP(*(.isr_vector)) *(.text*) *(.rodata*) . = ALIGN(4); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  __etext = .;
  .data : AT(__etext) {{ __data_start__ = .; *(.data*) . = ALIGN(4); __data_end__ = .; }} > RAM
  .bss (NOLOAD) : {{ __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; }} > RAM
  .noinit (NOLOAD) : {{ . = ALIGN(16); *(.noinit*) . = ALIGN(8); }} > RAM
  .stack (NOLOAD) : {{ . = ALIGN(8); . = . + 0x4000; __stack_top = .; }} > RAM
  end = .;
  PROVIDE(_end = .);
}}
"""


def missing_tools(cmsis: Path, cores: list[str]) -> str | None:
    """Why the benchmark cannot run here (one line), or None."""
    if not (cmsis / "Include" / "arm_nnfunctions.h").is_file():
        return f"CMSIS-NN not found at {cmsis} (--cmsis-nn DIR or CMSIS_NN_DIR)"
    if shutil.which(ARM_CC) is None:
        return f"{ARM_CC} not found (gcc-arm-none-eabi + libnewlib-arm-none-eabi)"
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found"
    for c in cores:
        if c not in CORES:
            return f"unknown core {c!r} (one of {', '.join(CORES)})"
    return None


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stdout}{r.stderr}")


def build(core_name: str, cmsis: Path, opt: str, jobs: int = 2) -> tuple[Path, dict[str, int]]:
    """The harness image for one core; returns (elf, {symbol: address})."""
    core = CORES[core_name]
    arch = list(core.cpu_flags) + ["-mthumb"]
    common = arch + [opt, "-g", "-ffunction-sections", "-fdata-sections", "-fno-common"]
    key = hashlib.sha256(f"{cmsis.resolve()}|{' '.join(common)}".encode()).hexdigest()[:12]
    out = CACHE / f"build-{core_name}-{key}"
    obj_dir = out / "cmsis"
    obj_dir.mkdir(parents=True, exist_ok=True)
    inc = cmsis / "Include"
    srcs = [
        p
        for d in CMSIS_DIRS
        for p in sorted((cmsis / "Source" / d).glob("*.c"))
        if "_f16" not in p.name and "_f32" not in p.name
    ]

    def compile_one(src: Path) -> Path:
        o = obj_dir / (src.stem + ".o")
        if not o.is_file() or o.stat().st_mtime < src.stat().st_mtime:
            _run([ARM_CC, *common, f"-I{inc}", "-c", "-o", str(o), str(src)])
        return o

    with ThreadPoolExecutor(max_workers=jobs) as ex:
        cmsis_objs = list(ex.map(compile_one, srcs))
    lib = out / "libcmsisnn.a"
    newest = max(o.stat().st_mtime for o in cmsis_objs)
    if not lib.is_file() or lib.stat().st_mtime < newest:
        lib.unlink(missing_ok=True)
        _run(["arm-none-eabi-ar", "rcs", str(lib), *map(str, cmsis_objs)])
    ld = out / "kvc.ld"
    ld.write_text(LINKER_SCRIPT.format(machine=core.machine, flash=core.flash, ram=core.ram))
    elf = out / "kvc.elf"
    fw_flags = ["-std=c99", "-ffp-contract=off", "-Wall", "-Wextra", *FT_DEFS, f"-I{FIRMWARE_CORE}"]
    # the interpreter and its ops (one file each under core/ops: firmware/core/ft_tfl_op.h)
    ops = sorted(str(p) for p in (FIRMWARE_CORE / "ops").glob("*.c"))
    fw = [str(FIRMWARE_CORE / s) for s in TFL_SRC] + ops
    # firmware sources and the harness in one command (fast); CMSIS-NN from its archive
    _run(
        [
            ARM_CC,
            *common,
            *fw_flags,
            f"-I{inc}",
            f"-T{ld}",
            "-nostartfiles",
            "-Wl,--gc-sections",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-o",
            str(elf),
            str(HARNESS / "kvc.c"),
            str(HARNESS / "kvc_start.c"),
            *fw,
            str(lib),
            "-lm",
        ]
    )
    return elf, _symbols(elf, ("kvc_model", "kvc_cfg"))


def _symbols(elf: Path, names: tuple[str, ...]) -> dict[str, int]:
    r = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True)
    syms = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in names:
            syms[parts[2]] = int(parts[0], 16)
    missing = [n for n in names if n not in syms]
    if missing:
        raise RuntimeError(f"{elf}: symbols {missing} not found")
    return syms


@dataclass
class Layer:
    index: int
    op: str
    shape: str
    portable: int
    dsp: int
    cmsis: int | None
    scratch_fedtiny: int
    scratch_cmsis: int
    same_portable: bool
    same_dsp: bool
    same_cmsis: bool | None


@dataclass
class Result:
    model: str
    core: str
    layers: list[Layer] = field(default_factory=list)
    arena: int = 0
    floor: int = 0  # the firmware's lower bound of TFLite Micro's arena (ft_tfl_model.tflm_floor)
    tflm_arena: int | None = (
        None  # fedtiny.model.info.min_arena_bytes (the tflite-micro runtime), if installed
    )
    multiplier_insn: int | None = None  # one per-channel multiplier as fedtiny computes it (once per arena)
    refused: str | None = None

    @property
    def fedtiny(self) -> int:
        return sum(x.dsp for x in self.layers)

    @property
    def portable(self) -> int:
        return sum(x.portable for x in self.layers)

    @property
    def cmsis(self) -> int:
        return sum(x.cmsis if x.cmsis is not None else x.dsp for x in self.layers)

    @property
    def identical(self) -> bool:
        return bool(self.layers) and all(
            x.same_portable and x.same_dsp and x.same_cmsis is not False for x in self.layers
        )

    def arena_line(self) -> str | None:
        """`<model> arena: fedtiny <a> B (DSP kernels), TFLite Micro <t> B, within: yes|no` (None: unknown)."""
        if self.refused is not None or self.tflm_arena is None or self.tflm_arena < 0:
            return None
        name = self.model if self.core == "m4" else f"{self.model} [{self.core}]"
        ok = "yes" if self.arena <= self.tflm_arena else "no"
        return f"{name} arena: fedtiny {self.arena} B (DSP kernels), TFLite Micro {self.tflm_arena} B, within: {ok}"

    def summary(self) -> str:
        name = self.model if self.core == "m4" else f"{self.model} [{self.core}]"
        if self.refused is not None:
            return f"{name} whole model: refused by the firmware: {self.refused}"
        n, m = self.fedtiny, self.cmsis
        return (
            f"{name} whole model: fedtiny {n} instructions, CMSIS-NN {m}, {n / m:.2f}x, "
            f"outputs identical: {'yes' if self.identical else 'no'}"
        )


def run_model(
    name: str, model: bytes, core_name: str, elf: Path, syms: dict[str, int], timeout: float = 600
) -> Result:
    if len(model) > KVC_MODEL_MAX:
        return Result(name, core_name, refused=f"model larger than the harness's {KVC_MODEL_MAX} bytes")
    core = CORES[core_name]
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        cfg = (len(model) << 32) | KVC_MAGIC
        cmd = [QEMU, "-M", core.machine, "-nographic", "-monitor", "none", "-icount", "shift=6"]
        cmd += ["-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        cmd += ["-device", f"loader,file={f.name},addr={syms['kvc_model']:#x},force-raw=on"]
        cmd += ["-device", f"loader,addr={syms['kvc_cfg']:#x},data={cfg:#x},data-len=8"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    res = Result(name, core_name)
    done = False
    for line in (r.stdout + "\n" + r.stderr).splitlines():  # semihosting writes to QEMU's stderr
        w = line.split()
        if not w or w[0] != "KVC":
            continue
        if w[1] == "refused":
            res.refused = " ".join(w[2:])
        elif w[1] == "qm":
            res.multiplier_insn = int(w[2])
        elif w[1] == "model":
            res.arena = int(w[5])
            if len(w) > 7 and w[6] == "floor":
                res.floor = int(w[7])
        elif w[1] == "op":
            res.layers.append(
                Layer(
                    index=int(w[2]),
                    op=w[3],
                    shape=w[4],
                    portable=int(w[5]),
                    dsp=int(w[6]),
                    cmsis=None if w[7] == "-" else int(w[7]),
                    scratch_fedtiny=int(w[8]),
                    scratch_cmsis=int(w[9]),
                    same_portable=w[10] == "1",
                    same_dsp=w[11] == "1",
                    same_cmsis=None if w[12] == "-1" else w[12] == "1",
                )
            )
        elif w[1] == "done":
            done = True
    if res.refused is None and (not done or r.returncode != 0):
        res.refused = f"harness failed (exit {r.returncode}): {(r.stdout + r.stderr)[-400:]}"
    return res


def tflm_arena(model: bytes) -> int | None:
    """The smallest arena TFLite Micro accepts (fedtiny.model.info.min_arena_bytes), None without tflite-micro."""
    try:
        sys.path.insert(0, str(ROOT))
        from fedtiny.model.info import min_arena_bytes

        return min_arena_bytes(model)
    except Exception:  # the runtime is not installed, or refused the model
        return None


def _ratio(a: int, b: int | None) -> str:
    return "n/a" if not b else f"{a / b:.2f}x"


def print_table(res: Result) -> None:
    title = res.model if res.core == "m4" else f"{res.model} [{res.core}]"
    if res.refused is not None:
        print(f"\n{title} ({CORES[res.core].machine}): refused: {res.refused}")
        return
    tflm = "" if res.tflm_arena is None else f", TFLite Micro's {res.tflm_arena} B"
    print(
        f"\n{title} ({CORES[res.core].machine}, arena {res.arena} B with the per-channel multipliers{tflm}; fedtiny "
        f"computes them once per arena, as TFLite Micro's Prepare, outside the counts: "
        f"{res.multiplier_insn} instructions per channel)"
    )
    print(
        "op | layer | output | fedtiny portable | fedtiny DSP | CMSIS-NN | DSP/CMSIS | scratch fedtiny/CMSIS B | identical"
    )
    for x in res.layers:
        same = "/".join(
            "yes" if s else ("-" if s is None else "NO") for s in (x.same_portable, x.same_dsp, x.same_cmsis)
        )
        cm = "-" if x.cmsis is None else f"{x.cmsis:,}"
        print(
            f"{x.index} | {x.op} | {x.shape} | {x.portable:,} | {x.dsp:,} | {cm} | {_ratio(x.dsp, x.cmsis)} | "
            f"{x.scratch_fedtiny}/{x.scratch_cmsis} | {same}"
        )
    print(
        f"total | | | {res.portable:,} | {res.fedtiny:,} | {res.cmsis:,} | {_ratio(res.fedtiny, res.cmsis)} | "
        f"{max((x.scratch_fedtiny for x in res.layers), default=0)}/"
        f"{max((x.scratch_cmsis for x in res.layers), default=0)} (largest) |"
    )


def by_op(results: list[Result]) -> None:
    """Per op kind over every model (m4 first): fedtiny DSP / CMSIS-NN where CMSIS-NN has a kernel."""
    agg: dict[tuple[str, str], list[int]] = {}
    for r in results:
        for x in r.layers:
            if x.cmsis is None:
                continue
            a = agg.setdefault((r.core, x.op), [0, 0, 0])
            a[0] += x.dsp
            a[1] += x.cmsis
            a[2] += 1
    if not agg:
        return
    print("\nper op kind (all models): core | op | layers | fedtiny DSP | CMSIS-NN | ratio")
    for (core, op), (d, c, n) in sorted(agg.items(), key=lambda kv: (kv[0][0], -kv[1][0] / max(kv[1][1], 1))):
        print(f"{core} | {op} | {n} | {d:,} | {c:,} | {_ratio(d, c)}")


# ---- models ----------------------------------------------------------------------------------------------
def reference_models() -> dict[str, bytes]:
    """fedtiny's shipped int8 reference models (one per task)."""
    out: dict[str, bytes] = {}
    for p in sorted((ROOT / "fedtiny" / "model" / "reference").glob("*.tflite")):
        task = p.name.split("-")[0]
        out.setdefault(task, p.read_bytes())
    return out


def _mlperf_builders() -> dict[str, Any]:
    import tensorflow as tf

    L = tf.keras.layers

    def bn_relu(x: Any) -> Any:
        return L.ReLU()(L.BatchNormalization()(x))

    def ds_cnn() -> Any:  # MLPerf Tiny KWS (keyword_spotting/keras_model.py, ds_cnn)
        i = L.Input((49, 10, 1), batch_size=1)
        x = bn_relu(L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(i))
        for _ in range(4):
            x = bn_relu(L.DepthwiseConv2D((3, 3), padding="same")(x))
            x = bn_relu(L.Conv2D(64, (1, 1), padding="same")(x))
        x = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
        x = L.Dense(12)(L.Flatten()(x))
        return tf.keras.Model(i, L.Softmax()(x))

    def resnet8() -> Any:  # MLPerf Tiny IC (image_classification/keras_model.py, resnet_v1_eembc)
        i = L.Input((32, 32, 3), batch_size=1)
        x = bn_relu(L.Conv2D(16, 3, padding="same")(i))
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            y = bn_relu(L.Conv2D(filters, 3, strides=stride, padding="same")(x))
            y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
            if stride != 1:
                x = L.Conv2D(filters, 1, strides=stride, padding="same")(x)
            x = L.ReLU()(L.Add()([x, y]))
        x = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
        x = L.Dense(10)(L.Flatten()(x))
        return tf.keras.Model(i, L.Softmax()(x))

    def mobilenet_v1() -> Any:  # MLPerf Tiny VWW (visual_wake_words/vww_model.py), alpha 0.25, 96x96x3
        i = L.Input((96, 96, 3), batch_size=1)
        x = bn_relu(L.Conv2D(8, 3, strides=2, padding="same")(i))
        blocks = (
            [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]
        )
        for filters, stride in blocks:
            x = bn_relu(L.DepthwiseConv2D(3, strides=stride, padding="same")(x))
            x = bn_relu(L.Conv2D(filters, 1, padding="same")(x))
        x = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
        x = L.Dense(2)(L.Flatten()(x))
        return tf.keras.Model(i, L.Softmax()(x))

    def fc_autoencoder() -> Any:  # MLPerf Tiny AD (anomaly_detection/keras_model.py)
        i = L.Input((640,), batch_size=1)
        x = i
        for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
            x = bn_relu(L.Dense(units)(x))
        return tf.keras.Model(i, L.Dense(640)(x))

    def op_mix() -> (
        Any
    ):  # the op kinds the MLPerf models leave out: depth multiplier 2, MAX_POOL_2D, broadcast ADD
        i = L.Input((16, 16, 4), batch_size=1)
        x = L.ReLU()(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(i))
        x = L.MaxPooling2D(2)(x)
        x = L.ReLU()(L.DepthwiseConv2D(3, strides=2, depth_multiplier=3, padding="valid")(x))
        y = L.Conv2D(24, 1)(x)
        x = L.Add()([x, y])
        g = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
        x = L.Add()([x, g])  # broadcast over H, W
        x = L.MaxPooling2D(3, strides=1, padding="same")(x)
        x = L.Dense(10)(L.Flatten()(x))
        return tf.keras.Model(i, L.Softmax()(x))

    return {
        "ds-cnn": ds_cnn,
        "resnet-8": resnet8,
        "mobilenetv1-0.25": mobilenet_v1,
        "fc-autoencoder": fc_autoencoder,
        "op-mix": op_mix,
    }


MLPERF = ("ds-cnn", "resnet-8", "mobilenetv1-0.25", "fc-autoencoder", "op-mix")
MODEL_VERSION = 2  # bump when a builder changes: the cache key


def mlperf_model(name: str, seed: int = 0) -> bytes:
    """An int8 .tflite of one MLPerf Tiny reference architecture (random weights), cached."""
    path = CACHE / "models" / f"{name}-v{MODEL_VERSION}-seed{seed}.tflite"
    if path.is_file():
        return path.read_bytes()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = _mlperf_builders()[name]()
    # BatchNormalization with non-trivial statistics, so the folded scales differ per channel
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                    rng.uniform(-0.2, 0.2, b.shape).astype("float32"),
                    rng.uniform(-0.2, 0.2, m.shape).astype("float32"),
                    rng.uniform(0.5, 1.5, v.shape).astype("float32"),
                ]
            )
    shape = (1, *model.input_shape[1:])

    def rep() -> Any:
        r = np.random.default_rng(seed + 1)
        for _ in range(16):
            yield [r.uniform(-1.0, 1.0, shape).astype("float32")]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):  # the converter's chatter
        data = bytes(conv.convert())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path, help=".tflite files to add")
    ap.add_argument(
        "--models",
        dest="sets",
        default="reference,mlperf",
        help="model sets: reference, mlperf, a name of either set, or none (comma-separated)",
    )
    ap.add_argument("--cores", default="m4", help="m4 (mps2-an386), m7 (mps2-an500), m33 (mps2-an505)")
    ap.add_argument(
        "--opt", default="-O2", help="optimization flag for both sides, e.g. --opt=-Os (default -O2)"
    )
    ap.add_argument("--cmsis-nn", type=Path, default=Path(os.environ.get("CMSIS_NN_DIR") or DEFAULT_CMSIS))
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--no-tflm", action="store_true", help="skip TFLite Micro's arena (tflite-micro runtime)")
    a = ap.parse_args(argv)
    cores = [c for c in a.cores.split(",") if c]
    why = missing_tools(a.cmsis_nn, cores)
    if why:
        print(f"SKIP: kernels_vs_cmsis: {why}")
        return 0
    for p in a.models:
        if not p.is_file():
            print(f"kernels_vs_cmsis: {p}: no such file", file=sys.stderr)
            return 2
    items: list[tuple[str, bytes]] = []
    sets = [s for s in a.sets.split(",") if s and s != "none"]
    refs = reference_models()
    for s in sets:
        if s == "reference":
            items += list(refs.items())
        elif s == "mlperf":
            items += [(n, mlperf_model(n)) for n in MLPERF]
        elif s in refs:
            items.append((s, refs[s]))
        elif s in MLPERF:
            items.append((s, mlperf_model(s)))
        else:
            print(f"kernels_vs_cmsis: unknown model set {s!r}", file=sys.stderr)
            return 2
    items += [(p.name, p.read_bytes()) for p in a.models]
    results: list[Result] = []
    tflm_cache: dict[str, int | None] = {}
    for c in cores:
        elf, syms = build(c, a.cmsis_nn, a.opt)
        for name, data in items:
            res = run_model(name, data, c, elf, syms)
            if res.refused is None and not a.no_tflm:
                res.tflm_arena = tflm_cache.setdefault(name, tflm_arena(data))
            results.append(res)
            print_table(res)
            sys.stdout.flush()
    by_op(results)
    print()
    for res in results:
        print(res.summary())
    for res in results:
        line = res.arena_line()
        if line:
            print(line)
    if a.json:
        a.json.write_text(
            json.dumps(
                [
                    {
                        "model": r.model,
                        "core": r.core,
                        "refused": r.refused,
                        "fedtiny": r.fedtiny,
                        "portable": r.portable,
                        "cmsis": r.cmsis,
                        "identical": r.identical,
                        "multiplier_insn": r.multiplier_insn,
                        "arena": r.arena,
                        "tflm_floor": r.floor,
                        "tflm_arena": r.tflm_arena,
                        "layers": [vars(x) for x in r.layers],
                    }
                    for r in results
                ],
                indent=1,
            )
            + "\n"
        )
    return 0 if all(r.refused is None and r.identical for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
