"""What the request handlers (handlers.py, upload.py, keys.py) need of a board, as a Protocol: they receive
the board through it, so they do not import the board (device.py), which imports them for its dispatch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fedtiny.clients.board.config import BoardConfig
from fedtiny.clients.board.flash import EmulatedFlash, Meta
from fedtiny.ondevice import FeatureCache, Int8Head

if TYPE_CHECKING:
    from fedtiny.model.runtime import Int8Runner


class Board(Protocol):
    """The state and services of one board (fedtiny.clients.board.device.VirtualBoard implements it)."""

    cfg: BoardConfig
    flash: EmulatedFlash
    meta: Meta  # RAM copy of the flash metadata (slots, confirmed, keys); persist() writes it
    cache: FeatureCache
    head: Int8Head  # the running head
    factory_head: Int8Head
    base_model: bytes | None  # the firmware model (.tflite) whose backbone head patches apply to
    backbone: bytes | None  # the .tflite whose backbone runs now
    active: int  # running slot (0xFF: the factory head)
    pending: tuple[int, bytes] | None  # (update id, encoded UpdateBlob) not yet acknowledged
    acked_id: int
    staged: bytearray  # SET_HEAD bytes received so far
    input_total: int  # STAGE_INPUT: the staged raw input's total (0: none)
    input_buf: bytearray  # STAGE_INPUT: its bytes received so far
    pushed_total: int
    sample_base: int  # pushed_total when the cache was last emptied (CLEAR, a switch of model; 0 at boot)

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def raw_input_len(self) -> int: ...

    @property
    def capabilities(self) -> int: ...

    @property
    def update_key(self) -> bytes | None: ...

    def reboot(self) -> None: ...

    def clear_ram(self) -> None: ...

    def persist(self) -> None: ...

    def image(self, slot: int) -> bytes: ...

    def content(self, slot: int) -> bytes: ...

    def load_head(self, slot: int) -> Int8Head: ...

    def head_of_image(self, image: bytes, kind: int) -> Int8Head: ...

    def slot_model(self, slot: int) -> bytes | None: ...

    def slot_intact(self, slot: int) -> bool: ...

    def mark_bad(self, slot: int) -> None: ...

    def prefix_crc(self, slot: int) -> int: ...

    def running_kind(self) -> int: ...

    def runner(self) -> Int8Runner | None: ...

    def running_model(self) -> bytes | None: ...

    def new_update_id(self) -> int: ...

    def check_begin_auth(
        self, signed: bool, kind: int, total: int, sha: bytes, tag: bytes, security_counter: int
    ) -> str | None: ...

    def check_signature(self, slot: int) -> tuple[str | None, int]: ...

    def check_tag(
        self, kind: int, total: int, sha: bytes, tag: bytes, security_counter: int = 0
    ) -> str | None: ...
