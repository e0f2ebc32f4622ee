"""Shared by the tests that interrupt a running `fedtiny run` (tests/test_run_interrupt.py, test_same_bits.py)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def wait_for_checkpoint(
    proc: subprocess.Popen[bytes], out: Path, round_: int, timeout_s: float = 400
) -> None:
    """Return once the run in ``out`` has checkpointed round ``round_`` (or later), or has ended, or after
    ``timeout_s``: the caller checks that ``proc`` still runs."""
    latest = out / "checkpoint" / "latest.json"
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(latest.read_text())["round"] >= round_:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
