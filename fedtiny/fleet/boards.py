"""Board profiles as data: per-board constants only (esptool style). Figures are datasheet-level estimates."""

from __future__ import annotations

from dataclasses import dataclass

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
