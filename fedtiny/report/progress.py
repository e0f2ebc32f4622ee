"""A progress bar for rounds: round, ETA and the current accuracy of the deployed int8 model."""

from __future__ import annotations

from typing import Protocol, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RoundShown(Protocol):
    """What the bar reads of a round: a RoundRow, or the record the ServerApp streams to `fedtiny run`."""

    @property
    def round(self) -> int: ...
    @property
    def accuracy(self) -> float: ...
    @property
    def accuracy_global(self) -> float: ...


class RoundProgress:
    """``second`` names the bar's second accuracy (a RoundRow's ``accuracy_global``): the clean factory test set
    of generated data, or the devices' test examples in the base condition of recorded data."""

    def __init__(self, rounds: int, second: str = "factory test set") -> None:
        self.console = Console(stderr=True)
        self.second = second
        self._bar = Progress(
            TextColumn("[bold]round {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[acc]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task("rounds", total=rounds, acc="preparing")

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def stop(self) -> None:
        """Stop the bar (restores the terminal's cursor); safe to call twice."""
        self._bar.stop()

    def log(self, text: str) -> None:
        self._bar.console.print(text)

    def update(self, row: RoundShown, rounds: int) -> None:
        acc = f"acc {100 * row.accuracy:.1f}% ({self.second} {100 * row.accuracy_global:.1f}%)"
        self._bar.update(self._task, completed=row.round, acc=acc)
