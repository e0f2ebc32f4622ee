"""Where `fedtiny-fw --cut-at N` cuts (issue 20 §3): *in* the N-th flash program/erase counted from after the boot.
Operations 1..N-1 are complete, the N-th is torn (a prefix of it lands), and nothing after it runs: the process
exits 75 with "power cut at flash op N". The virtual board's `EmulatedFlash(cut_at_write=N)` cuts the same way
(a torn prefix of its N-th write, then PowerCut)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_firmware import HostBoard, make

from fedtiny.clients.board.flash import EmulatedFlash, PowerCut
from fedtiny.errors import DeviceError, LinkError
from fedtiny.link.blobs import encode_head_patch


@pytest.fixture(scope="module")
def host_fw() -> Path:
    make("build/host/fedtiny-fw")
    return Path(__file__).resolve().parents[1] / "firmware" / "build" / "host" / "fedtiny-fw"


def cut_run(base: Path, flash: Path, n: int, patch: bytes) -> tuple[int | None, str, np.ndarray]:
    """Upload ``patch`` on a copy of ``base`` with --cut-at n: (exit status or None if no cut, stderr, flash)."""
    shutil.copy(base, flash)
    b = HostBoard(flash, "--device-id", "7").start("--cut-at", str(n))
    try:
        s = b.session()
        s.retries = 1
        s.upload(patch)
        s.close()
        return None, "", np.frombuffer(flash.read_bytes(), np.uint8)
    except (LinkError, DeviceError, OSError, ConnectionError):
        rc = b.wait(10)
        assert b.proc is not None and b.proc.stderr is not None
        return rc, b.proc.stderr.read(), np.frombuffer(flash.read_bytes(), np.uint8)
    finally:
        b.stop()


def test_cut_at_n_tears_the_nth_flash_operation(host_fw: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.bin"
    b = HostBoard(base, "--device-id", "7").start()  # provisioned, then nothing written until the upload
    try:
        s = b.session()
        head = s.get_head()
        s.close()
    finally:
        b.stop()
    patch = encode_head_patch(head.with_(bias=head.bias + 11))
    f0 = np.frombuffer(base.read_bytes(), np.uint8)
    runs = {n: cut_run(base, tmp_path / f"cut{n}.bin", n, patch) for n in (1, 2)}
    for n, (rc, err, _) in runs.items():
        assert rc == 75 and f"power cut at flash op {n}" in err, (n, rc, err)
    d1 = np.flatnonzero(runs[1][2] != f0)
    d2 = np.flatnonzero(runs[2][2] != f0)
    # the first operation of this upload (a metadata record) has started with --cut-at 1: not a cut before it
    assert d1.size > 0
    # ... and is complete with --cut-at 2: what --cut-at 1 left is a torn prefix of it (the same bytes, fewer)
    assert set(d1.tolist()) < set(d2.tolist())
    assert np.array_equal(runs[2][2][d1], runs[1][2][d1])
    assert d1.max() < min(set(d2.tolist()) - set(d1.tolist()))
    # no cut past the last operation: the upload completes
    n = 3
    while (run := cut_run(base, tmp_path / f"cut{n}.bin", n, patch))[0] == 75:
        assert f"power cut at flash op {n}" in run[1]
        n += 1
        assert n < 40
    done = run[2]
    ref = tmp_path / "ref.bin"
    shutil.copy(base, ref)
    b = HostBoard(ref, "--device-id", "7").start()
    try:
        s = b.session()
        s.upload(patch)
        s.close()
    finally:
        b.stop()
    assert np.array_equal(done, np.frombuffer(ref.read_bytes(), np.uint8))


def test_virtual_board_flash_cuts_in_the_nth_write(tmp_path: Path) -> None:
    f = EmulatedFlash(str(tmp_path / "v.bin"), slot_size=4096, cut_at_write=2)
    f.write(0, b"\x00" * 64)  # write 1: complete
    with pytest.raises(PowerCut):
        f.write(100, b"\x00" * 64)  # write 2: torn, its first half lands
    assert f.read(0, 64) == b"\x00" * 64
    assert f.read(100, 64) == b"\x00" * 32 + b"\xff" * 32
