"""Every process fedtiny starts dies with the fedtiny process that started it, whatever kills that process.

Two mechanisms (Linux; elsewhere :func:`guard` and :func:`pdeathsig` do nothing):

* **A watchdog on a pipe, and a mark in the environment.** :func:`guard` (called before the first child is
  started) starts a small watchdog process (this file, run with ``python -I -S``: stdlib only) in its own
  session, whose stdin is the read end of a pipe only this process holds the write end of, and puts
  ``FEDTINY_LIFELINE_<pid>_<random>=1`` into ``os.environ``: every process started from then on, and everything
  those start (Flower's SuperExec and ``flwr-simulation``, which ``flower-superlink`` starts in new sessions; Ray's
  GCS, raylet and workers; virtual boards, gateways, ``flwr-serverapp``) inherits the mark. When this process
  ends, however it ends (SIGKILL alone or of its process group, OOM kill, a closed terminal), the kernel
  closes the pipe; the watchdog reads EOF, freezes (SIGSTOP) every process whose ``/proc/PID/environ`` holds
  the mark, and every descendant of those (a process that rewrites its title may have overwritten its
  environment), until no new one appears (nothing can start another meanwhile), then SIGKILLs them all, and exits.
  A SIGKILL of a process group does not reach it (its own session), nor does a terminal's SIGHUP or Ctrl-C.
  Nested fedtinys (``fedtiny trial`` starts ``fedtiny serve``, ``emulate``, ``gateway``) add their own mark
  next to the inherited one, so each watchdog ends its own subtree.
* **The parent-death signal** on the direct children (:func:`pdeathsig`: ``prctl(PR_SET_PDEATHSIG,
  SIGKILL)`` in a ``preexec_fn``): the kernel kills them the moment this process dies, before the watchdog
  sweeps. Only for children started from the main thread: the signal fires when the *thread* that forked the
  child ends.

A graceful stop (Ctrl-C, SIGTERM, SIGHUP: :mod:`fedtiny.interrupt`) still stops the children in order
itself; the watchdog then finds nothing left. The processes a graceful stop kills leave the watchdog alone
(:func:`watchdog_pid`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

ENV_PREFIX = "FEDTINY_LIFELINE_"
PR_SET_PDEATHSIG = 1


class _Watchdog(NamedTuple):
    """This process's watchdog: the pid that started it (a forked child has none yet), the environment variable
    that marks its children, the write end of its stdin pipe (held open while this process lives), the process."""

    pid: int
    var: str
    write: int
    proc: subprocess.Popen[bytes]


_state: _Watchdog | None = None
_lock = threading.Lock()
_libc: Any = None


def guard() -> None:
    """Start this process's watchdog (once per process) and mark every child started from now on."""
    if not sys.platform.startswith("linux"):
        return
    global _state
    with _lock:
        if _state is not None and _state.pid == os.getpid():
            return
        var = f"{ENV_PREFIX}{os.getpid()}_{os.urandom(4).hex()}"
        r, w = os.pipe()  # both ends non-inheritable: no other child holds the write end
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}  # not its own victim
        debug = os.environ.get("FEDTINY_LIFELINE_DEBUG", "")  # a file: what the watchdog found and killed
        try:
            out = open(debug, "ab") if debug else subprocess.DEVNULL
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), var],
                stdin=r,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a kill of our process group or a terminal's signals do not reach it
                env=env,
            )
        finally:
            os.close(r)
        _state = _Watchdog(os.getpid(), var, w, proc)
        os.environ[var] = "1"


def watchdog_pid() -> int:
    """The pid of this process's watchdog (0: none)."""
    return _state.proc.pid if _state is not None and _state.pid == os.getpid() else 0


def _set_pdeathsig() -> None:  # runs in the child between fork and exec: no allocation, no locks
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def pdeathsig() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when this process dies (Linux, main
    thread only; None otherwise)."""
    global _libc
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    if _libc is None:
        import ctypes

        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.prctl  # noqa: B018  (resolved now, not in the forked child)
        except (OSError, AttributeError):
            return None
    parent = os.getpid()

    def preexec() -> None:
        _set_pdeathsig()
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


# -- the watchdog (python -I -S lifeline.py VAR; stdin: the pipe) ---------------------------------------------
def marked(var: str, also_below: Iterable[int] = ()) -> set[int]:
    """Live processes whose environment holds ``VAR=...``, and every descendant of those and of
    ``also_below`` (this process excluded). The descendants count because a process that rewrites its title
    (Ray's agents and workers, setproctitle) may overwrite the start of its environment: the mark may not
    show, but its parent (the raylet, frozen by then) is marked."""
    want = var.encode() + b"="
    me = os.getpid()
    found = set()
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            if fields[0] in (b"Z", b"X"):
                continue
            children.setdefault(int(fields[1]), []).append(pid)
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if any(e.startswith(want) for e in env.split(b"\0")):
            found.add(pid)
    todo = list(found | set(also_below))
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found and c != me:
                found.add(c)
                todo.append(c)
    return found


def sweep(var: str, settle_s: float = 0.3, limit_s: float = 10.0) -> int:
    """Freeze every marked process until no new one appears, SIGKILL them all; repeat until none is seen for
    ``settle_s``. Returns how many were killed."""
    killed: set[int] = set()
    end = time.time() + limit_s
    quiet_since = time.time()
    while time.time() < end:
        frozen: set[int] = set()
        while True:
            new = marked(var, frozen) - frozen
            if not new:
                break
            for p in new:
                try:
                    os.kill(p, signal.SIGSTOP)
                except OSError:
                    pass
            frozen |= new
        for p in frozen:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if frozen:
            print(f"{time.time():.3f} killed {sorted(frozen)}", flush=True)
        killed |= frozen
        if frozen:
            quiet_since = time.time()
        elif time.time() - quiet_since >= settle_s:
            break
        time.sleep(0.05)
    return len(killed)


def _watch(var: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    while True:  # EOF: the process that started us is gone (nothing is ever written)
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    print(f"{time.time():.3f} parent gone; sweeping {var}", flush=True)
    print(f"{time.time():.3f} done: {sweep(var)} killed", flush=True)


if __name__ == "__main__":
    _watch(sys.argv[1])
