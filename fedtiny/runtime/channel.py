"""The channel from the ServerApp (in Flower's simulation process) to the `fedtiny run` driver: files in the run
directory. One JSON line per record (:class:`RoundRecord` per round, a final :class:`RunDone` or
:class:`RunStopped`; :func:`encode` and :func:`decode` are the one conversion), and an error record holding one
line for the user (the traceback goes to the log)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    """A round done: what the progress bar shows of it."""

    round: int
    rounds: int
    accuracy: float
    accuracy_global: float
    wall_s: float = 0.0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class RunDone:
    """The ServerApp wrote the results."""

    rounds_done: int


@dataclass(frozen=True)
class RunStopped:
    """The rounds stopped at the driver's request; the driver writes the results of the rounds done."""


Record = RoundRecord | RunDone | RunStopped


def encode(rec: Record) -> dict[str, object]:
    """One channel line (JSON object) of a record."""
    if isinstance(rec, RoundRecord):
        return dataclasses.asdict(rec)
    if isinstance(rec, RunDone):
        return {"done": True, "rounds_done": rec.rounds_done}
    return {"stopped": True}


def decode(line: Mapping[str, object]) -> Record | None:
    """The record of one channel line; None for a line this version does not know."""

    def num(key: str) -> float:
        v = line.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    if line.get("done"):
        n = line.get("rounds_done")
        return RunDone(int(n) if isinstance(n, int) else 0)
    if line.get("stopped"):
        return RunStopped()
    r = line.get("round")
    if isinstance(r, int):
        return RoundRecord(
            int(r),
            int(num("rounds")) if math.isfinite(num("rounds")) else 0,
            num("accuracy"),
            num("accuracy_global"),
            num("wall_s"),
            num("elapsed_s"),
        )
    return None


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

    def _append(self, record: Record) -> None:
        with (self.dir / PROGRESS).open("a") as fh:
            fh.write(json.dumps(encode(record)) + "\n")

    def round_done(self, row: RoundRow, rounds: int) -> None:
        """FleetServer's progress callback."""
        elapsed = round(time.time() - self.started, 3)
        self._append(RoundRecord(row.round, rounds, row.accuracy, row.accuracy_global, row.wall_s, elapsed))

    def done(self, rounds_done: int) -> None:
        self._append(RunDone(rounds_done))

    def stopped(self) -> None:
        self._append(RunStopped())

    def error(self, exc: BaseException) -> None:
        """The one line the user sees: a fedtiny error as it is, anything else with its type."""
        line = str(exc) if isinstance(exc, FedTinyError) else f"{type(exc).__name__}: {exc}"
        (self.dir / ERROR).write_text(json.dumps({"error": line.strip().splitlines()[0] if line else ""}))


class Reader:
    """The driver's end: complete records appended since the last call, and the error record."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = runtime_dir(out_dir)
        self.tail = Tail(self.dir / PROGRESS)

    def records(self) -> list[Record]:
        return [r for r in map(decode, self.tail.records()) if r is not None]

    def error(self) -> str | None:
        try:
            return str(json.loads((self.dir / ERROR).read_text())["error"])
        except (OSError, ValueError, KeyError):
            return None
