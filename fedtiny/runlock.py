"""A run directory's lock: one `fedtiny run` (or `--resume`) at a time writes into a results directory.

``DIR/fedtiny.lock`` holds the owner's pid, and the owner holds an exclusive ``flock`` on it for as long as it
lives (the kernel drops it when the process dies, however it dies, so a dead owner never blocks a run). A run
that finds the lock held is refused; one that finds the file left by a dead owner (a hard kill: nothing
removed it) takes it over and says so. The owner removes the file when it ends.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from fedtiny.errors import FedTinyError

LOCK = "fedtiny.lock"


class RunLock:
    """The lock of ``out_dir``, held by this process until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._owner = os.getpid()

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None or os.getpid() != self._owner:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 64).decode().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def acquire(out_dir: Path, say: Callable[[str], None]) -> RunLock:
    """Lock ``out_dir`` for this process; :class:`FedTinyError` (one line) when a live process holds it.
    ``say`` gets one line when a stale lock (its owner dead) is taken over."""
    path = out_dir / LOCK
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise FedTinyError(
                f"{out_dir}: in use by a running fedtiny ({who}, {path}); wait for it to end or stop it"
            ) from None
        try:  # the owner may have removed the file between our open and our lock: lock the file there now
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        old = _read_pid(fd)
        if old and old != os.getpid():
            say(f"fedtiny: {out_dir}: removed a stale lock (pid {old} is no longer running)")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        return RunLock(path, fd)
    raise FedTinyError(f"{out_dir}: could not take the lock {path}")
