"""Ctrl-C, SIGTERM and SIGHUP (a closed terminal, handled as SIGTERM) during `fedtiny run`: stop within seconds, keep the results of the rounds done.

:class:`StopSignal` owns SIGINT/SIGTERM for the duration of a run. Before the rounds (model training, fleet
data) a signal raises :class:`RunInterrupted` in the main thread at once. During the rounds it only sets
``stop.event``: the round loop checks it at every exchange with the gateways (:class:`StoppableGrid` on the
Simulation Engine, :func:`stoppable_handler` inline), raises :class:`RunInterrupted` there, and the run
unwinds normally (Flower's threads end, Ray shuts down, the results of the rounds done are written). A second
signal (a third while the results are being written), or a stop that has not finished ``grace_s`` seconds
after the first, ends the process at once
(:meth:`StopSignal.force`): the children it started (Ray's GCS, raylet, workers) are killed and the process
exits with 128 + the signal number.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Self, TypeVar, TypeVarTuple

import psutil

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.serverapp import Grid

#: a signal's disposition as ``signal.getsignal`` returns it (restored on exit)
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None
_R = TypeVar("_R")
_Args = TypeVarTuple("_Args")

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
#: the signals a run stops on: SIGHUP (a closed terminal) as SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunInterrupted(Exception):
    """The run was stopped by a signal; ``summary`` holds the results written so far (None: none)."""

    def __init__(self, signum: int, summary: Mapping[str, object] | None = None) -> None:
        super().__init__(f"interrupted ({SIGNAL_NAMES.get(signal.Signals(signum), f'signal {signum}')})")
        self.signum = signum
        self.summary = summary  # a run's summary.json (fedtiny.summary.Summary) or a field trial's

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignal:
    """SIGINT/SIGTERM/SIGHUP handling for one run (a context manager; main thread only).

    ``on_force`` is called (once, best effort) before a forced exit: it writes what it can and prints the
    resume line; it gets the signal number.
    """

    def __init__(self, grace_s: float = 10.0, on_force: Callable[[int], None] | None = None) -> None:
        self.event = threading.Event()
        self.signum = 0
        self.grace_s = grace_s
        self.on_force = on_force
        self.raise_now = True  # before the rounds: raise in the main thread
        # the run's RunPlan once prepared (on_force writes its results): fedtiny.plan is a higher layer
        self.plan: object = None
        self.writing = threading.Event()  # the results of the rounds done are being written (not forced)
        self._old: dict[int, SignalHandler] = {}
        self._forcing = threading.Lock()
        self.started: list[psutil.Process] = []
        self.on_first: list[Callable[[], object]] = []  # called in the handler at the first signal (cheap)
        self.before_exit: list[Callable[[], None]] = []  # called by force() just before the process exits
        self._warned = False

    # -- installation ----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.getsignal(sig)
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (TypeError, ValueError):  # a handler set from C: leave ours (the process is ending)
                pass

    def install(self) -> None:
        """(Re)install the handlers: Ray's ``ray.init`` installs its own SIGTERM handler."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    # -- the handler -----------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if (
            self.event.is_set()
        ):  # a second signal: stop now, unless the results of the rounds done are being written
            if self.writing.is_set() and not self._warned:
                self._warned = True
                sys.stderr.write(
                    "\nfedtiny: writing the results of the rounds done (a few seconds); "
                    "press Ctrl-C again to quit without them\n"
                )
                return
            self.force(self.signum or signum)
            return
        self.signum = signum
        for hook in self.on_first:  # first: e.g. tell the ServerApp's process to stop its rounds now
            try:
                hook()
            except OSError:
                pass
        self.started = started_processes()  # Ray's workers leave the process tree once the raylet is gone
        self.event.set()
        threading.Thread(target=self._watchdog, name="fedtiny-stop-watchdog", daemon=True).start()
        if self.raise_now:
            raise RunInterrupted(signum)

    def _watchdog(self) -> None:
        time.sleep(self.grace_s)
        end = time.time() + self.grace_s
        while self.writing.is_set() and time.time() < end:  # let the results of the rounds done be written
            time.sleep(0.1)
        self.force(self.signum)

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a stop was asked for (called by the round loop's transports)."""
        if self.event.is_set():
            raise RunInterrupted(self.signum)

    def force(self, signum: int) -> None:
        """End the process now: ``on_force``, kill the children this process started, exit 128 + signum."""
        if not self._forcing.acquire(blocking=False):
            return
        try:
            if self.on_force is not None:
                self.on_force(signum)
        except BaseException as exc:
            try:  # stderr may be a closed terminal (SIGHUP)
                sys.stderr.write(f"fedtiny: could not write the results of the rounds done: {exc}\n")
            except OSError:
                pass
        kill_children(self.started)
        for hook in self.before_exit:  # e.g. release the run directory's lock
            try:
                hook()
            except Exception:
                pass
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)


# -- the transports' stop checks ---------------------------------------------------------------------
class StopFile:
    """A stop asked for by another process: the file ``path`` exists (``fedtiny run``'s driver writes it when
    it gets Ctrl-C/SIGTERM; the ServerApp runs in Flower's simulation process and checks it at every exchange,
    so no round starts after the stop whatever the driver is busy with). Quacks as :class:`StopSignal` for
    :class:`StoppableGrid`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.event = threading.Event()
        self.signum = int(signal.SIGINT)

    def check(self) -> None:
        if self.event.is_set() or self.path.exists():
            self.event.set()
            try:
                self.signum = int(self.path.read_text().strip() or self.signum)
            except (OSError, ValueError):
                pass
            raise RunInterrupted(self.signum)


class StoppableGrid:
    """A Flower Grid whose blocking calls return within ``poll_s`` of a stop (raising RunInterrupted); without
    a stop (None) it only polls.

    It also replaces the Grid's own wait for replies: Flower's gRPC Grid (the SuperLink's) sleeps 3 s between
    pulls, its in-memory Grid 0.1 s, so every round would wait up to that long after its last gateway replied.
    Here the interval is 2% of the time waited so far, at least 5 ms and at most ``poll_s``: a reply is seen
    within 2% of the time it took (a 0.8 s round of 100,000 devices: within 16 ms, where a doubling backoff
    had reached 0.1 s), and a long wait costs at most 1 / ``poll_s`` pulls a second."""

    def __init__(self, grid: Grid, stop: StopSignal | StopFile | None, poll_s: float = 0.1) -> None:
        self._grid = grid
        self._stop = stop
        self._poll_s = poll_s

    def __getattr__(self, name: str) -> Any:  # the rest of Flower's Grid, as it is
        return getattr(self._grid, name)

    def _check(self) -> None:
        if self._stop is not None:
            self._stop.check()

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self._grid.get_node_ids()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Grid.send_and_receive, checking for a stop while it waits for the replies."""
        self._check()
        ids = set(self._grid.push_messages(messages))
        end = None if timeout is None else time.time() + timeout
        out: list[Message] = []
        start = time.time()
        while ids and (end is None or time.time() < end):
            self._check()
            got = list(self._grid.pull_messages(ids))
            out.extend(got)
            ids.difference_update(m.metadata.reply_to_message_id for m in got)
            if ids:
                wait = min(self._poll_s, max(0.005, 0.02 * (time.time() - start)))
                if self._stop is not None:
                    self._stop.event.wait(wait)
                else:
                    time.sleep(wait)
        self._check()
        return out


def stoppable_handler(handle: Callable[[*_Args], _R], stop: StopSignal) -> Callable[[*_Args], _R]:
    """The inline engine's gateway call, checking for a stop before and after each gateway."""

    def call(*args: *_Args) -> _R:
        stop.check()
        out = handle(*args)
        stop.check()
        return out

    return call


# -- processes -----------------------------------------------------------------------------------
def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live process below ``pid`` (default: this one); [] once ``pid`` is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def started_processes() -> list[psutil.Process]:
    """Every descendant: psutil knows each by pid and start time, so it is found later even once re-parented,
    and a reused pid is never taken for it."""
    return descendants()


def process_tree(pid: int) -> set[psutil.Process]:
    """``pid`` and its live descendants."""
    try:
        return {psutil.Process(pid), *descendants(pid)}
    except psutil.Error:
        return set()


def kill_processes(known: Iterable[psutil.Process], wait_s: float = 2.0) -> None:
    """SIGTERM the still-running processes of ``known`` (never a reused pid), then SIGKILL those still alive
    after ``wait_s``."""
    _kill(set(known), wait_s)


def kill_children(known: Iterable[psutil.Process] = (), wait_s: float = 2.0) -> None:
    """SIGTERM every descendant and every still-running process of ``known`` (from :func:`started_processes`),
    then SIGKILL those still alive after ``wait_s``."""
    _kill({*descendants(), *known}, wait_s)


def _kill(procs: set[psutil.Process], wait_s: float) -> None:
    from fedtiny.lifeline import watchdog_pid

    alive = [p for p in procs if p.pid != watchdog_pid()]  # it ends by itself once this process is gone
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive:
            try:
                p.send_signal(sig)  # refuses a pid reused by another process
            except psutil.Error:
                pass
        if sig == signal.SIGTERM:
            end = time.time() + wait_s
            while time.time() < end and any(_alive(p) for p in alive):
                time.sleep(0.05)
            alive = [p for p in alive if _alive(p)]
            if not alive:
                return


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie child is left for its owner to reap: Popen reads its exit status)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
