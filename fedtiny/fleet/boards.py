"""Board profiles as data: per-board constants only (esptool style). Figures are datasheet-level estimates,
except the inference costs, which come from measurements (inference_costs.json, written by
benchmarks/model_table.py: instructions per inference of the reference models on the emulated Cortex-M4F)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypedDict, cast

import numpy as np

from fedtiny.errors import BudgetError, ScenarioError


@dataclass(frozen=True)
class Board:
    name: str
    mcu: str
    clock_hz: float
    ram_bytes: int
    flash_bytes: int
    fpu: bool
    macs_per_cycle: float  # sustained float32 MACs per cycle in the head-training loop
    energy_per_mac_j: float
    link: str  # "ble" | "serial" | "wifi"
    link_bytes_per_s: float  # sustained application throughput
    energy_per_radio_byte_j: float
    ram_reserved_bytes: int  # RAM taken by the backbone's tensor arena, stack and the application
    link_latency_s: float = 0.05  # per-message setup/round-trip latency of the link
    soft_float_factor: float = 10.0  # slowdown of the float32 training path without an FPU
    # slowdown of the integer trainer (docs/ondevice.md §3b) against float32 with an FPU: 478,209 vs 194,373
    # instructions per 64x10 batch-16 step on a Cortex-M4 (firmware, QEMU -icount)
    fixed_point_factor: float = 2.5
    # the firmware's DSP kernels (FT_TFL_OPTIMIZED) need the Armv7E-M DSP extension (Cortex-M4/M7/M33); other
    # cores run the portable kernels, so their inference cost is the portable instruction count
    arm_dsp: bool = False

    def slowdown(self, fixed_point: bool = False) -> float:
        """Cost of one training MAC relative to float32 with an FPU."""
        if self.fpu:
            return 1.0
        return self.fixed_point_factor if fixed_point else self.soft_float_factor

    def compute_seconds(self, macs: np.ndarray | float, fixed_point: bool = False) -> np.ndarray | float:
        """Virtual time of ``macs`` training multiply-accumulates on this board."""
        return macs * self.slowdown(fixed_point) / (self.clock_hz * self.macs_per_cycle)

    def link_seconds(self, nbytes: np.ndarray | float, messages: int = 2) -> np.ndarray | float:
        return nbytes / self.link_bytes_per_s + messages * self.link_latency_s

    def energy_j(
        self, macs: np.ndarray | float, radio_bytes: np.ndarray | float, fixed_point: bool = False
    ) -> np.ndarray | float:
        mac_j = self.energy_per_mac_j * self.slowdown(fixed_point)
        return macs * mac_j + radio_bytes * self.energy_per_radio_byte_j

    @property
    def energy_per_cycle_j(self) -> float:
        """Active energy per core cycle implied by the profile (energy per MAC x MACs per cycle)."""
        return self.energy_per_mac_j * self.macs_per_cycle

    def seconds_for_instructions(self, instructions: float) -> float:
        """Time of ``instructions`` at this board's clock, at the measured table's cycles per instruction."""
        return instructions * cycles_per_instruction() / self.clock_hz

    def energy_for_instructions(self, instructions: float) -> float:
        return instructions * cycles_per_instruction() * self.energy_per_cycle_j

    def inference_seconds(self, model: str, optimized: bool = True) -> float:
        """One inference of reference model ``model`` (vibration, kws, digits), from the measured instructions
        (the DSP kernels' where this board has the DSP extension and ``optimized``)."""
        return self.seconds_for_instructions(inference_instructions(model, optimized and self.arm_dsp))

    def inference_energy_j(self, model: str, optimized: bool = True) -> float:
        return self.energy_for_instructions(inference_instructions(model, optimized and self.arm_dsp))


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        # Arduino Nano 33 BLE Sense: nRF52840, Cortex-M4F 64 MHz, 256 KB RAM, 1 MB flash, BLE 5
        Board(
            "nano33ble",
            "nRF52840 (Cortex-M4F)",
            64e6,
            256 * 1024,
            1024 * 1024,
            True,
            0.5,
            60e-12,
            "ble",
            16_000.0,
            150e-9,
            128 * 1024,
            arm_dsp=True,
        ),
        # ESP32-S3: dual Xtensa LX7 240 MHz, 512 KB SRAM, 8 MB flash, Wi-Fi + BLE
        Board(
            "esp32s3",
            "ESP32-S3 (Xtensa LX7)",
            240e6,
            512 * 1024,
            8 * 1024 * 1024,
            True,
            0.5,
            110e-12,
            "wifi",
            500_000.0,
            40e-9,
            200 * 1024,
        ),
        # STM32H743: Cortex-M7 480 MHz, 1 MB RAM, 2 MB flash, USB/UART
        Board(
            "stm32h7",
            "STM32H743 (Cortex-M7)",
            480e6,
            1024 * 1024,
            2 * 1024 * 1024,
            True,
            1.0,
            90e-12,
            "serial",
            92_160.0,
            20e-9,
            256 * 1024,
            arm_dsp=True,
        ),
        # A Cortex-M0+ class board without FPU (e.g. RP2040 at 133 MHz, 264 KB RAM): fixed-point training
        Board(
            "rp2040",
            "RP2040 (Cortex-M0+)",
            133e6,
            264 * 1024,
            2 * 1024 * 1024,
            False,
            0.1,
            40e-12,
            "serial",
            11_520.0,
            20e-9,
            128 * 1024,
        ),
    )
}


#: measured figures per reference model (benchmarks/model_table.py --update-costs writes it)
INFERENCE_COSTS_FILE = Path(__file__).with_name("inference_costs.json")
COSTS_SCHEMA = "fedtiny-inference-costs/1"


#: each model's keys and their types (None allowed where the figure may be missing: "n/a")
class ModelCosts(TypedDict):
    """One reference model's measured figures (None: not measured, "n/a")."""

    model_bytes: int
    arena_firmware_bytes: int
    arena_firmware_optimized_bytes: int | None
    arena_tflm_bytes: int
    macs: int
    instructions_portable: int
    instructions_optimized: int | None
    int8_accuracy: float | None
    test_samples: int | None


class InferenceCosts(TypedDict):
    """inference_costs.json, as :func:`check_costs` validated it."""

    schema: str
    cycles_per_instruction: float
    models: dict[str, ModelCosts]


COST_KEYS: dict[str, tuple[type, bool]] = {
    "model_bytes": (int, False),
    "arena_firmware_bytes": (int, False),
    "arena_firmware_optimized_bytes": (int, True),
    "arena_tflm_bytes": (int, False),
    "macs": (int, False),
    "instructions_portable": (int, False),
    "instructions_optimized": (int, True),
    "int8_accuracy": (float, True),
    "test_samples": (int, True),
}


def check_costs(doc: object, where: str = "inference_costs.json") -> InferenceCosts:
    """Validate the measured-costs document; a ScenarioError names the key and what was expected."""
    if not isinstance(doc, dict) or doc.get("schema") != COSTS_SCHEMA:
        raise ScenarioError(f"{where}: key 'schema': expected {COSTS_SCHEMA!r}")
    cpi = doc.get("cycles_per_instruction")
    if not isinstance(cpi, (int, float)) or isinstance(cpi, bool) or not cpi > 0:
        raise ScenarioError(f"{where}: key 'cycles_per_instruction': expected a number > 0")
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        raise ScenarioError(f"{where}: key 'models': expected a table of models")
    for name, m in models.items():
        if not isinstance(m, dict):
            raise ScenarioError(f"{where}: key 'models.{name}': expected a table")
        for key, (tp, nullable) in COST_KEYS.items():
            v = m.get(key)
            ok = (v is None and nullable) or (
                isinstance(v, tp) and not isinstance(v, bool) or (tp is float and isinstance(v, int))
            )
            if key not in m or not ok:
                raise ScenarioError(f"{where}: key 'models.{name}.{key}': expected {tp.__name__}")
    return cast(InferenceCosts, doc)  # checked above, key by key


@lru_cache(maxsize=1)
def inference_costs() -> InferenceCosts:
    """The measured inference costs (inference_costs.json next to this module)."""
    try:
        doc = json.loads(INFERENCE_COSTS_FILE.read_text())
    except (OSError, ValueError) as e:
        raise ScenarioError(
            f"{INFERENCE_COSTS_FILE}: cannot read the measured inference costs: {e}"
        ) from None
    return check_costs(doc, str(INFERENCE_COSTS_FILE))


def cycles_per_instruction() -> float:
    """The assumption the latencies rest on (stated in the table): cycles per executed instruction."""
    return float(inference_costs()["cycles_per_instruction"])


def inference_instructions(model: str, optimized: bool = True) -> int:
    """Measured instructions per inference of a reference model (the DSP kernels' when measured and asked)."""
    models = inference_costs()["models"]
    if model not in models:
        raise ScenarioError(
            f"no measured inference cost for model {model!r}; expected one of: {', '.join(models)}"
        )
    m = models[model]
    n = m["instructions_optimized"] if optimized and m["instructions_optimized"] is not None else None
    return int(n if n is not None else m["instructions_portable"])


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ScenarioError(f"unknown board {name!r}; expected one of: {', '.join(BOARDS)}")
    return BOARDS[name]


def check_fits(board: Board, ram_needed: int, what: str) -> None:
    """Refuse a configuration a board cannot hold, saying by how much."""
    free = board.ram_bytes - board.ram_reserved_bytes
    if ram_needed > free:
        raise BudgetError(
            f"board '{board.name}' ({board.mcu}) has {free} bytes of RAM free for learning, but {what} needs "
            f"{ram_needed}: use a smaller fleet.cache_size or train.batch_size, or a bigger board"
        )
