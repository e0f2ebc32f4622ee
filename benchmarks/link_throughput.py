"""Upload throughput over emulated links and the wire cost of a head-only redeploy.

`python benchmarks/link_throughput.py [--size 102400]`: a 100 KB image over a 115200-baud UART (10 bits
per byte, full duplex) and an emulated BLE link (MTU 247 -> 244-byte packets, 7.5 ms connection interval,
one packet per direction per event), in real time, against the virtual board.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import ImageKind
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import PacedTransport

KEY = bytes(range(32))


def run(name: str, link_kwargs: dict, line_rate: float, image: bytes) -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY, slot_size=len(image) + 4096, rx_window=4))
    t = PacedTransport(board, **link_kwargs)
    s = BoardSession(t, timeout=2.0, key=KEY)
    s.hello()
    t0 = time.monotonic()
    st = s.upload(image, ImageKind.TFLITE)
    dt = time.monotonic() - t0
    assert st.received == len(image) and board.image(st.slot) == image
    rate = len(image) / dt
    print(
        f"{name:>28}: {len(image)} B in {dt:6.2f} s = {rate:8.0f} B/s = {100 * rate / line_rate:5.1f}% of "
        f"{line_rate:.0f} B/s line rate (wire up {t.wire_up} B, down {t.wire_down} B, retries {s.retried})"
    )


def head_redeploy_bytes() -> None:
    head = default_head(10, 64)
    board = VirtualBoard(BoardConfig(fleet_key=KEY))
    t = PacedTransport(board, bytes_per_s=1e9)
    s = BoardSession(t, timeout=2.0, key=KEY)
    s.hello()
    before_up, before_down = t.wire_up, t.wire_down
    golden = head.weights[:1].copy()  # any int8 feature vector works as a golden input
    s.deploy_head(default_head(10, 64, seed=1), golden)
    patch = len(encode_head_patch(head))
    target = 1.2 * head.weights.size + 64
    print(
        f"head-only redeploy of a 64x10 head: patch {patch} B (int8 weights {head.weights.size} B + "
        f"{8 * 10} B scales/bias + 20 B header; target <= 1.2x{head.weights.size}+64 = {target:.0f} B: "
        f"{'OK' if patch <= target else 'OVER'}); on the wire incl. BEGIN/CHUNK/VERIFY/ACTIVATE/CONFIRM: "
        f"{t.wire_up - before_up} B up, {t.wire_down - before_down} B down"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100 * 1024)
    a = ap.parse_args()
    image = os.urandom(a.size)
    run("serial 115200 baud", {"bytes_per_s": 11520.0}, 11520.0, image)
    ble_rate = 244 / 7.5e-3
    run("BLE MTU 244, 7.5 ms, 1 pkt/ev", {"packet": 244, "interval": 7.5e-3}, ble_rate, image)
    head_redeploy_bytes()


if __name__ == "__main__":
    main()
