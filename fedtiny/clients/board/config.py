"""What a virtual board is: identity, model shape and limits (shared by the board and its handlers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BoardConfig:
    """What a board is: identity, model shape and limits."""

    device_id: int = 1
    fleet_key: bytes | None = None
    board_name: str = "virtual-m4"
    fw_version: str = "fedtiny-vboard 0.1"
    cache_capacity: int = 256
    max_payload: int = 4096
    rx_window: int = 4
    slot_size: int = 256 * 1024
    # bytes of the STAGE_INPUT buffer (one raw input larger than a frame; 0: no STAGED_INPUT), as the C host board's
    # FT_MAX_STAGED_INPUT
    max_staged_input: int = 32768
    train_arith: str = "both"  # TRAIN arithmetic: "float" (section 3), "fixed" (section 3b, no FPU) or "both"
    # Ed25519 public keys (raw 32 bytes, 1..4) provisioned on a blank flash: the board then accepts only signed
    # images (section 7); after that the key set in flash (changed by KEY_CHANGE) is the board's
    trust_keys: tuple[bytes, ...] = ()
    device_key: bytes | None = (
        None  # this board's own update key (32 bytes): tags its UpdateBlobs (section 7)
    )
