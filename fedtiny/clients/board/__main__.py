"""`python -m fedtiny.clients.board --listen socket://127.0.0.1:PORT|pty --state FILE --device-id N --key HEX`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedtiny.clients.board.server import serve_board


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m fedtiny.clients.board", description="serve one virtual fedtiny board"
    )
    ap.add_argument("--listen", default="socket://127.0.0.1:7777", help="socket://HOST:PORT or pty")
    ap.add_argument("--pty", action="store_true", help="serve on a new pty (prints its path)")
    ap.add_argument("--state", default="board.flash", help="flash image file (A/B slots, metadata)")
    ap.add_argument("--device-id", type=int, default=1)
    ap.add_argument("--key", default="", help="per-fleet HMAC key, hex (empty: none provisioned)")
    ap.add_argument("--model", default="", help="int8 .tflite the board runs (backbone for raw samples)")
    a = ap.parse_args()
    model = Path(a.model).read_bytes() if a.model else None
    try:
        serve_board(
            "pty" if a.pty else a.listen, a.state, a.device_id, bytes.fromhex(a.key) or None, model=model
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
