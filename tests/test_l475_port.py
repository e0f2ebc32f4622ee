"""The B-L475E-IOT01A (STM32L475) port in QEMU's b-l475e-iot01a machine (QEMU >= 9): the QEMU build of its
firmware (build/l475/fw-qemu.elf: the board's USART1, clocks and memory map, the store in SRAM2) answers the link
protocol on USART1, trains bit-exactly as the spec (fixed-point), takes a head deploy, and keeps it across a
system reset. QEMU's STM32L4 USART model receives a few hundred bytes per second, so the exchanges are small."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from board_helpers import fixed_reference

from fedtiny.clients.board.device import default_head
from fedtiny.link.messages import TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import open_transport

FW = Path(__file__).resolve().parents[1] / "firmware"
KEY = bytes(range(32))  # the firmware's compiled-in test fleet key


def _machine() -> bool:
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        return False
    r = subprocess.run(["qemu-system-arm", "-M", "help"], capture_output=True, text=True)
    return re.search(r"^b-l475e-iot01a ", r.stdout, re.M) is not None


@pytest.fixture(scope="module")
def board() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    if not _machine():
        pytest.skip(
            "needs gcc-arm-none-eabi and qemu-system-arm >= 9 (b-l475e-iot01a; Debian: bookworm-backports)"
        )
    r = subprocess.run(
        ["make", "-s", "-C", str(FW), "build/l475/fw-qemu.elf"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    elf = FW / "build" / "l475" / "fw-qemu.elf"
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    cfg = int(re.search(r"^([0-9a-f]+) \S ft_board_cfg$", nm, re.M).group(1), 16)  # type: ignore[union-attr]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["qemu-system-arm", "-M", "b-l475e-iot01a", "-nographic", "-monitor", "none", "-kernel", str(elf)]
    cmd += ["-serial", f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"]
    cmd += ["-device", f"loader,addr={cfg:#x},data={(21 << 32) | 0xB0A4DCF6:#x},data-len=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "QEMU did not open its serial port"
            time.sleep(0.1)
    yield proc, f"socket://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


def _session(uri: str) -> BoardSession:
    s = BoardSession(open_transport(uri), key=KEY, timeout=20.0, seed=3)
    s.hello()
    return s


def test_l475_firmware_over_usart1(board: tuple[subprocess.Popen[bytes], str]) -> None:
    _, uri = board
    s = _session(uri)
    info = s.info
    assert info is not None and info.board_name == "b-l475e-iot01a" and info.device_id == 21
    assert (info.C, info.D) == (10, 64) and info.cache_capacity == 100
    head = s.get_head()
    assert head.equals(default_head())
    rng = np.random.default_rng(5)
    x = rng.integers(-100, 100, (6, 64)).astype(np.int8)
    y = np.arange(6) % 10
    assert s.push_samples(x, y, clear=True) == 6
    req = TrainRequest(2, 4, float(np.float32(0.05)), 0.0, 0.0, 0.0, 7, 1, flags=1)  # fixed-point: bit-exact
    assert s.train(req).num_examples == 6
    upd = s.read_update()
    ref = fixed_reference(head, x, y, 21, capacity=100, batch=4, lr=req.lr)
    assert np.array_equal(upd.weights, ref.weights[0]) and np.array_equal(upd.bias, ref.bias[0])
    s.ack_update(upd.update_id)
    # a head deploy into the A/B store (SRAM2 in this build), then a system reset: the new head stays
    new = head.with_(bias=head.bias - 21)
    st = s.deploy_head(new, x[:2], KEY)
    assert s.get_head().equals(new) and st.confirmed == st.active
    s.reset()
    s.close()
    s = _session(uri)
    assert s.get_head().equals(new)
    s.close()
