"""The channel from the ServerApp (in Flower's simulation process) to the `fedtiny run` driver: files in the run
directory. One JSON line per round (round, accuracy, elapsed), a final ``done`` line, and an error record
holding one line for the user (the traceback goes to the log)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtiny.errors import FedTinyError
from fedtiny.jsonl import Tail
from fedtiny.results import RoundRow

#: files under the run directory
RUNTIME_DIR = "runtime"
PROGRESS = "progress.jsonl"
ERROR = "error.json"
STOP = "stop"  # written by the driver at Ctrl-C/SIGTERM (the signal number): the ServerApp stops its rounds
LOG = "fedtiny.log"


@dataclass(frozen=True)
class RoundRecord:
    """What the progress bar shows of a round (the fields of a RoundRow it reads)."""

    round: int
    accuracy: float
    accuracy_global: float

    @classmethod
    def of(cls, rec: dict[str, Any]) -> RoundRecord:
        def num(key: str) -> float:
            v = rec.get(key)
            return float(v) if isinstance(v, (int, float)) else math.nan

        return cls(int(rec["round"]), num("accuracy"), num("accuracy_global"))


def runtime_dir(out_dir: Path) -> Path:
    return out_dir / RUNTIME_DIR


def reset(out_dir: Path) -> None:
    """Forget an earlier attempt's records (a resumed run starts a new channel)."""
    d = runtime_dir(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name in (PROGRESS, ERROR, STOP):
        (d / name).unlink(missing_ok=True)


def stop_path(out_dir: Path) -> Path:
    return runtime_dir(out_dir) / STOP


def request_stop(out_dir: Path, signum: int) -> None:
    """The driver's end of a stop: the ServerApp starts no exchange with the gateways after this."""
    stop_path(out_dir).write_text(str(signum))


class Writer:
    """The ServerApp's end: appends records, one complete line each."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = runtime_dir(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()

    def _append(self, record: dict[str, Any]) -> None:
        with (self.dir / PROGRESS).open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def round_done(self, row: RoundRow, rounds: int) -> None:
        """FleetServer's progress callback."""
        self._append(
            {
                "round": row.round,
                "rounds": rounds,
                "accuracy": row.accuracy,
                "accuracy_global": row.accuracy_global,
                "wall_s": row.wall_s,
                "elapsed_s": round(time.time() - self.started, 3),
            }
        )

    def done(self, summary: dict[str, Any]) -> None:
        self._append({"done": True, "rounds_done": summary.get("rounds_done")})

    def stopped(self) -> None:
        """The rounds stopped at the driver's request; the driver writes the results of the rounds done."""
        self._append({"stopped": True})

    def error(self, exc: BaseException) -> None:
        """The one line the user sees: a fedtiny error as it is, anything else with its type."""
        line = str(exc) if isinstance(exc, FedTinyError) else f"{type(exc).__name__}: {exc}"
        (self.dir / ERROR).write_text(json.dumps({"error": line.strip().splitlines()[0] if line else ""}))


class Reader(Tail):
    """The driver's end: complete records appended since the last call, and the error record."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = runtime_dir(out_dir)
        super().__init__(self.dir / PROGRESS)

    def error(self) -> str | None:
        try:
            return str(json.loads((self.dir / ERROR).read_text())["error"])
        except (OSError, ValueError, KeyError):
            return None
