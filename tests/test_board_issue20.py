"""Issue 20 (defects an independent host found), on the C host firmware and the virtual board alike through the
same session API: a slot marked bad is rewritable (its bytes are erased before the rewrite), labels above 255 are
carried whole, and a board_name over 64 bytes is cut at a UTF-8 character boundary (docs/protocol.md)."""

from __future__ import annotations

import re
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from test_firmware import BUILD, KEY, HostBoard, make

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError, LinkError
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import (
    TRAIN_FIXED,
    ImageKind,
    MsgType,
    SlotState,
    Status,
    TrainRequest,
    UploadBegin,
    UploadState,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.ondevice import FeatureCache
from fedtiny.ondevice.evaluate import evaluate_head

META = 2 * 4096  # the C host flash file mirrors the flash: two metadata pages, then the slots
SLOT = 256 * 1024


@pytest.fixture(scope="module")
def host_fw() -> Path:
    make("build/host/fedtiny-fw")
    return BUILD / "host" / "fedtiny-fw"


@contextmanager
def c_board(flash: Path, *args: str, exe: Path | None = None) -> Iterator[tuple[HostBoard, BoardSession]]:
    b = HostBoard(flash, "--device-id", "7", *args, exe=exe).start()
    try:
        s = b.session()
        yield b, s
        s.close()
    finally:
        b.stop()


def v_session(vb: VirtualBoard) -> BoardSession:
    s = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
    s.hello()
    return s


def status_of(fn: Callable[[], object]) -> str:
    try:
        fn()
    except DeviceError as e:
        return next(w for w in re.findall(r"[A-Z_]+", str(e)) if w in Status.__members__)
    return "OK"


def clear_one_bit(image: bytes) -> bytes:
    """The image with the lowest set bit of its first nonzero byte past 32 cleared (a torn or rotted bit)."""
    i = next(k for k in range(32, len(image)) if image[k])
    bad = bytearray(image)
    bad[i] &= bad[i] - 1
    return bytes(bad)


# --------------------------------------------------------------------- defect 1: a slot marked bad is rewritable
def rewrite_after_failed_verify(s: BoardSession) -> list[object]:
    """BEGIN a head patch, send it with one bit cleared, VERIFY; the same BEGIN again, the right bytes, VERIFY."""
    head = s.get_head()
    patch = encode_head_patch(head.with_(bias=head.bias + 7))
    begin = UploadBegin.for_image(patch, ImageKind.HEAD_PATCH, KEY).encode()

    def send(image: bytes) -> None:
        for off in range(0, len(image), 500):
            s.request(MsgType.UPLOAD_CHUNK, struct.pack("<I", off) + image[off : off + 500])

    st = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin))
    send(clear_one_bit(patch))
    out: list[object] = [st.resumed, status_of(lambda: s.verify(st.slot))]
    st = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin))
    out += [st.resumed, st.received, st.state]
    send(patch)
    out.append(status_of(lambda: s.verify(st.slot)))
    out.append(s.status().slots[st.slot].state)
    return out


WANT_REWRITE = [0, "HASH_MISMATCH", 1, 0, SlotState.RECEIVING, "OK", SlotState.VERIFIED]


def test_failed_verify_then_rewrite_virtual_board() -> None:
    vb = VirtualBoard(BoardConfig(device_id=7, fleet_key=KEY))
    assert rewrite_after_failed_verify(v_session(vb)) == WANT_REWRITE


def test_failed_verify_then_rewrite_c_board(host_fw: Path, tmp_path: Path) -> None:
    with c_board(tmp_path / "flash.bin") as (_, s):
        assert rewrite_after_failed_verify(s) == WANT_REWRITE


def test_bit_rot_found_by_verify_then_rewrite_both_boards(host_fw: Path, tmp_path: Path) -> None:
    """A VERIFIED slot whose flash loses a bit: VERIFY marks it bad, the same upload rewrites it (both boards)."""
    flash = tmp_path / "flash.bin"
    vb = VirtualBoard(BoardConfig(device_id=7, fleet_key=KEY))
    sv = v_session(vb)
    with c_board(flash) as (_, sc):
        patch = encode_head_patch(sc.get_head().with_(bias=sc.get_head().bias - 5))
        slot = sc.upload(patch).slot
        sc.verify(slot)
    vpatch = encode_head_patch(vb.factory_head.with_(bias=vb.factory_head.bias - 5))
    vslot = sv.upload(vpatch).slot
    sv.verify(vslot)
    raw = bytearray(flash.read_bytes())
    raw[META + slot * SLOT : META + slot * SLOT + len(patch)] = clear_one_bit(patch)
    flash.write_bytes(bytes(raw))
    base = vb.flash.slot_base(vslot)
    vb.flash.mem[base : base + len(vpatch)] = clear_one_bit(vpatch)
    with c_board(flash) as (_, sc):
        for s, img, k in ((sc, patch, slot), (sv, vpatch, vslot)):
            assert status_of(partial(s.verify, k)) == "HASH_MISMATCH"
            st = s.status().slots[k]
            assert (st.state, st.received) == (SlotState.RECEIVING, 0)
            assert s.upload(img).received == len(img)
            assert status_of(partial(s.verify, k)) == "OK"


# ------------------------------------------------------------------------ defect 2: labels above 255 carried whole
@pytest.fixture(scope="module")
def wide_fw() -> Path:
    """The host firmware built for heads of up to 300 classes."""
    make(
        "B=build/wide",
        "THIRD_PARTY=build/third_party",
        "FT_DEFS=-DFT_MAX_CLASSES=300",
        "build/wide/host/fedtiny-fw",
    )
    return BUILD / "wide" / "host" / "fedtiny-fw"


def test_labels_above_255_on_a_300_class_head(wide_fw: Path, tmp_path: Path) -> None:
    head = default_head(300, 64, seed=4)
    fh = tmp_path / "head.bin"
    fh.write_bytes(encode_head_patch(head))
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (24, 64)).astype(np.int8)
    y = np.array([5, 256, 260, 299, 511 % 300, 300 - 1, 257, 0] * 3)
    cache = FeatureCache(1, 24, 64)
    cache.push(x[None], y[None])
    acc, loss = evaluate_head(head, cache.features[0], cache.labels[0])
    vb = VirtualBoard(BoardConfig(device_id=7, fleet_key=KEY), factory_head=head)
    sv = v_session(vb)
    with c_board(tmp_path / "flash.bin", "--factory-head", str(fh), exe=wide_fw) as (_, sc):
        assert sc.info is not None and sc.info.C == 300
        got: list[object] = []
        for s in (sc, sv):
            s.push_samples(x, y, clear=True)
            ev = s.evaluate()
            got.append((ev.n, np.float32(ev.accuracy).tobytes(), np.float32(ev.loss).tobytes()))
            s.train(TrainRequest(1, 4, 0.05, 0, 0, 0, 1, 1, TRAIN_FIXED))
            u = s.read_update()
            got.append(u.weights.tobytes() + u.bias.tobytes() + np.float32(u.loss).tobytes())
        assert got[0] == (24, np.float32(acc).tobytes(), np.float32(loss).tobytes())
        assert got[0] == got[2]
        assert got[1] == got[3]  # training saw the same labels


# ---------------------------------------------------------------- defect 3: board_name cut at a character boundary
NAMES = [
    ("a" * 63 + "é", "a" * 63),
    ("b" * 62 + "€x", "b" * 62),
    ("c" * 64 + "😀", "c" * 64),
    ("d" * 61 + "😀", "d" * 61),
]


@pytest.mark.parametrize(("name", "want"), NAMES)
def test_long_board_name_cut_at_a_character(host_fw: Path, tmp_path: Path, name: str, want: str) -> None:
    assert len(name.encode()) > 64
    sv = v_session(VirtualBoard(BoardConfig(board_name=name, fleet_key=KEY)))
    assert sv.info is not None and sv.info.board_name == want
    with c_board(tmp_path / "flash.bin", "--name", name) as (_, sc):
        assert sc.info is not None and sc.info.board_name == want


def test_rewrite_of_a_bad_slot_survives_a_power_cut_at_every_flash_op(host_fw: Path, tmp_path: Path) -> None:
    """The erase before the rewrite is power-cut safe: cut at the N-th flash program/erase of the rewrite, power
    back, the same upload completes and verifies (C host firmware, process-level cuts)."""
    base = tmp_path / "base.bin"
    with c_board(base) as (_, s):
        head = s.get_head()
        patch = encode_head_patch(head.with_(bias=head.bias + 11))
        begin = UploadBegin.for_image(patch, ImageKind.HEAD_PATCH, KEY).encode()
        st = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin))
        bad = clear_one_bit(patch)
        for off in range(0, len(bad), 1000):
            s.request(MsgType.UPLOAD_CHUNK, struct.pack("<I", off) + bad[off : off + 1000])
        assert status_of(partial(s.verify, st.slot)) == "HASH_MISMATCH"
    cuts = 0
    for n in range(1, 40):
        flash = tmp_path / f"cut{n}.bin"
        shutil.copy(base, flash)
        b = HostBoard(flash, "--device-id", "7").start("--cut-at", str(n))
        try:
            s = b.session()
            s.retries = 1
            s.upload(patch)
            s.verify(st.slot)
            s.close()
            break
        except (LinkError, DeviceError, OSError, ConnectionError):
            assert b.wait(10) == 75, f"cut {n}"
            cuts += 1
        finally:
            b.stop()
        with c_board(flash) as (_, s):
            assert s.upload(patch).received == len(patch)
            assert status_of(partial(s.verify, st.slot)) == "OK", f"cut {n}"
    assert cuts >= 3
