"""Emulated flash of the virtual board: two A/B slots and two alternating metadata sectors, in a file.

Every write is one "flash operation"; `cut_at_write=N` simulates a power cut at the N-th operation
(1-based): a torn prefix of that write lands, then PowerCut is raised and the board must reboot.
This is the reference for the metadata rules of docs/protocol.md section 5 (Persistence).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

META_SECTOR = 4096
META_MAGIC = b"FTM3"  # FTM3 = FTM2 + trusted public keys and the key counter (FTM2 records are still read)
META_MAGIC_V2 = b"FTM2"
# magic, counter, confirmed, testing, flags (SlotStatus flags: REVERTED, FELL_BACK), n_slots,
# uid_reserved (update ids up to this one may have been issued), sec_floor (anti-rollback security counter)
_HDR = struct.Struct("<4sIBBBBII")
# state, kind, flags (bit 0: Ed25519-signed MCUboot image), total, received, sha256, tag, security_counter
_SLOT = struct.Struct("<BBHII32s32sI")
_KEYS = struct.Struct(
    "<BBHI"
)  # FTM3: n_keys, reserved, reserved, key_counter; then n_keys x 32-byte public keys
SLOT_SIGNED = 0x01


class PowerCut(Exception):
    """Raised by the emulated flash when the power-cut hook fires."""


@dataclass
class SlotMeta:
    state: int = 0
    kind: int = 0
    total_len: int = 0
    received: int = 0
    sha256: bytes = bytes(32)
    tag: bytes = bytes(32)
    security_counter: int = 0
    flags: int = 0  # SLOT_SIGNED: the slot holds a signed MCUboot image (its payload is the model)


@dataclass
class Meta:
    counter: int = 0
    confirmed: int = 0xFF
    testing: int = 0xFF
    reverted: int = 0  # SlotStatus flags (bit 0 REVERTED, bit 1 FELL_BACK), reported once by STATUS
    slots: list[SlotMeta] = field(default_factory=lambda: [SlotMeta(), SlotMeta()])
    uid_reserved: int = 0
    sec_floor: int = 0
    keys: list[bytes] = field(default_factory=list)  # trusted Ed25519 public keys (raw, 32 bytes each)
    key_counter: int = 0  # the counter of the last KEY_CHANGE applied (anti-replay)

    def encode(self) -> bytes:
        body = _HDR.pack(
            META_MAGIC,
            self.counter,
            self.confirmed,
            self.testing,
            self.reverted,
            len(self.slots),
            self.uid_reserved,
            self.sec_floor,
        )
        for s in self.slots:
            body += _SLOT.pack(
                s.state, s.kind, s.flags, s.total_len, s.received, s.sha256, s.tag, s.security_counter
            )
        body += _KEYS.pack(len(self.keys), 0, 0, self.key_counter) + b"".join(self.keys)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def decode(cls, raw: bytes) -> Meta | None:
        if raw[:4] not in (META_MAGIC, META_MAGIC_V2):
            return None
        n = raw[11]
        size = _HDR.size + n * _SLOT.size
        keys: list[bytes] = []
        key_counter = 0
        if raw[:4] == META_MAGIC:
            if size + _KEYS.size > len(raw):
                return None
            nk, _, _, key_counter = _KEYS.unpack_from(raw, size)
            keys = [
                bytes(raw[size + _KEYS.size + 32 * i : size + _KEYS.size + 32 * (i + 1)]) for i in range(nk)
            ]
            size += _KEYS.size + 32 * nk
        if size + 4 > len(raw) or struct.unpack_from("<I", raw, size)[0] != zlib.crc32(raw[:size]):
            return None
        _, counter, conf, test, rev, _, uid, floor = _HDR.unpack_from(raw)
        slots = []
        for k in range(n):
            st, kind, flags, total, rec, sha, tag, sc = _SLOT.unpack_from(raw, _HDR.size + k * _SLOT.size)
            slots.append(SlotMeta(st, kind, total, rec, sha, tag, sc, flags))
        return cls(counter, conf, test, rev, slots, uid, floor, keys, key_counter)


class EmulatedFlash:
    """A flat flash image: [meta0 | meta1 | slot0 | slot1], optionally persisted to `path`."""

    def __init__(
        self, path: str | None, slot_size: int, n_slots: int = 2, cut_at_write: int | None = None
    ) -> None:
        self.path = path
        self.slot_size = slot_size
        self.n_slots = n_slots
        self.size = 2 * META_SECTOR + n_slots * slot_size
        self.cut_at_write = cut_at_write
        self.writes = 0
        if path and os.path.exists(path) and os.path.getsize(path) == self.size:
            with open(path, "rb") as f:
                self.mem = bytearray(f.read())
        else:
            self.mem = bytearray(b"\xff" * self.size)
            self._persist(0, self.size)

    def _persist(self, off: int, n: int) -> None:
        if not self.path:
            return
        mode = "r+b" if os.path.exists(self.path) and os.path.getsize(self.path) == self.size else "wb"
        with open(self.path, mode) as f:
            if mode == "wb":
                f.write(self.mem)
            else:
                f.seek(off)
                f.write(self.mem[off : off + n])

    def write(self, off: int, data: bytes) -> None:
        """One flash operation; the power-cut hook may tear it."""
        if off < 0 or off + len(data) > self.size:
            raise ValueError(f"flash write [{off}, {off + len(data)}) out of range")
        self.writes += 1
        if self.cut_at_write is not None and self.writes == self.cut_at_write:
            torn = data[: len(data) // 2]
            self.mem[off : off + len(torn)] = torn
            self._persist(off, len(torn))
            raise PowerCut(f"power cut at flash write {self.writes}")
        self.mem[off : off + len(data)] = data
        self._persist(off, len(data))

    def program(self, off: int, data: bytes) -> None:
        """Program image bytes as NOR flash does: bits can only be cleared (erased bytes read 0xFF), so
        programming over bytes that are not erased leaves `old & new`. One flash operation (may be torn)."""
        old = self.mem[off : off + len(data)]
        self.write(off, bytes(a & b for a, b in zip(old, data, strict=True)))

    def blank(self, off: int, n: int) -> bool:
        """Whether the n bytes at off read erased (0xFF)."""
        return self.mem[off : off + n].count(0xFF) == n

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.mem[off : off + n])

    def slot_base(self, slot: int) -> int:
        return 2 * META_SECTOR + slot * self.slot_size

    def erase_slot(self, slot: int) -> None:
        self.write(self.slot_base(slot), b"\xff" * self.slot_size)

    def load_meta(self) -> Meta | None:
        """The valid metadata record with the highest counter, or None (blank flash)."""
        recs = [Meta.decode(self.read(i * META_SECTOR, META_SECTOR)) for i in (0, 1)]
        valid = [m for m in recs if m is not None]
        return max(valid, key=lambda m: m.counter) if valid else None

    def store_meta(self, meta: Meta) -> None:
        """Write the next record into the other sector (atomic against a torn write)."""
        meta.counter += 1
        self.write((meta.counter % 2) * META_SECTOR, meta.encode())
