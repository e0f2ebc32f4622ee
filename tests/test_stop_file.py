"""The ServerApp's side of a stop asked for by `fedtiny run`'s driver (another process): the stop file."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fedtiny.interrupt import RunInterrupted, StopFile, StoppableGrid
from fedtiny.runtime import channel


class _SlowGrid:
    """A grid whose replies never come: only a stop ends send_and_receive."""

    def __init__(self) -> None:
        self.pushed = 0

    def push_messages(self, messages: Any) -> list[int]:
        self.pushed += 1
        return [1]

    def pull_messages(self, ids: Any) -> list[Any]:
        return []


def test_a_stop_file_ends_a_waiting_exchange_and_prevents_the_next(tmp_path: Path) -> None:
    channel.reset(tmp_path)
    grid = _SlowGrid()
    stoppable = StoppableGrid(grid, StopFile(channel.stop_path(tmp_path)), poll_s=0.02)
    threading.Timer(0.3, lambda: channel.request_stop(tmp_path, int(signal.SIGTERM))).start()
    t0 = time.time()
    with pytest.raises(RunInterrupted) as info:
        stoppable.send_and_receive([object()], timeout=30)
    assert time.time() - t0 < 5
    assert info.value.exit_code == 128 + int(signal.SIGTERM)
    with pytest.raises(RunInterrupted):  # no new exchange starts
        stoppable.send_and_receive([object()], timeout=30)
    assert grid.pushed == 1


def test_reset_forgets_an_earlier_stop(tmp_path: Path) -> None:
    channel.reset(tmp_path)
    channel.request_stop(tmp_path, int(signal.SIGINT))
    channel.reset(tmp_path)  # a resumed run starts a new channel
    StopFile(channel.stop_path(tmp_path)).check()  # no stop: returns


def test_a_garbled_stop_file_still_stops_as_ctrl_c(tmp_path: Path) -> None:
    channel.reset(tmp_path)
    channel.stop_path(tmp_path).write_text("not a number")
    with pytest.raises(RunInterrupted) as info:
        StopFile(channel.stop_path(tmp_path)).check()
    assert info.value.signum == int(signal.SIGINT)


class _ReplyOnPull:
    """A grid that answers the message on its n-th pull; counts pulls."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulls = 0

    def push_messages(self, messages: Any) -> list[int]:
        return [7]

    def pull_messages(self, ids: Any) -> list[Any]:
        self.pulls += 1
        if self.pulls < self.n:
            return []

        class _Meta:
            reply_to_message_id = 7

        class _Reply:
            metadata = _Meta()

        return [_Reply()]


def test_without_a_stop_the_grid_polls_at_2_percent_of_the_wait_capped_at_poll_s() -> None:
    grid = _ReplyOnPull(3)
    t0 = time.time()
    got = StoppableGrid(grid, None, poll_s=0.05).send_and_receive([object()], timeout=30)
    assert len(got) == 1 and grid.pulls == 3 and time.time() - t0 < 1  # 5 ms apart at first
    never = _ReplyOnPull(10**9)
    t0 = time.time()
    assert StoppableGrid(never, None, poll_s=0.05).send_and_receive([object()], timeout=3.0) == []
    took = time.time() - t0
    # 5 ms apart for the first 0.25 s (at most 50 pulls), then 2% of the wait (50 ln(2.5 / 0.25) = 115 pulls),
    # then 50 ms apart from 2.5 s on (10): about 175, where a fixed 5 ms would pull 600 times
    assert 3.0 <= took < 8
    assert 60 <= never.pulls <= 200  # more than the cap alone (60): the interval grew from 5 ms
