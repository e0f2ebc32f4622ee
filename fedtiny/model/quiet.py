"""TensorFlow's output goes to a log file, never to the console.

TensorFlow and Keras write from C++ (absl's "All log messages before absl::InitializeLog() ...", oneDNN's
``port.cc`` line, the converter's "fully_quantize: 0, inference_type: 6 ...") and from Python (the export's
"Saved artifact at ..." and "Captures: ..." prints, warnings). ``TF_CPP_MIN_LOG_LEVEL`` silences only part of
it, so :func:`quiet` points file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at a log file while
TensorFlow is imported, loads, trains or converts a model, and puts them back afterwards.

Where the output goes: the ``path`` given; else the one set by :func:`log_to` (``fedtiny init``: a log file
beside the scenario it writes); else the file of the root logger's ``FileHandler`` (``fedtiny run``: the run's
``fedtiny.log``); else ``tensorflow.log`` in the cache directory. ``FEDTINY_VERBOSE=1`` leaves the console alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.RLock()
_depth = 0
_current: Path | None = None
_target: Path | None = None
_console = -1  # a duplicate of the console's descriptor 2 while quiet() points 2 at the log file


def write_console(text: str) -> None:
    """Write ``text`` to the console's stderr, also while :func:`quiet` points descriptor 2 at the log file: a
    stop forced during TensorFlow's training (another thread ends the process) is said on the terminal."""
    fd = _console
    if fd >= 0:
        try:
            os.write(fd, text.encode("utf-8", "replace"))
            return
        except OSError:
            pass
    sys.stderr.write(text)


def quiet_env() -> None:
    """Fewer TensorFlow log lines to begin with; call before TensorFlow is imported (a user's own setting wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.suppress(ImportError):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)


@contextlib.contextmanager
def log_to(path: Path | None) -> Iterator[None]:
    """While it lasts, :func:`quiet` writes to ``path`` (None: the default choice)."""
    global _target
    saved, _target = _target, path
    try:
        yield
    finally:
        _target = saved


def log_path(path: Path | None = None) -> Path:
    """Where :func:`quiet` writes (see the module's doc)."""
    if path is not None:
        return path
    if _target is not None:
        return _target
    import logging

    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            return Path(h.baseFilename)
    return Path(os.environ.get("FEDTINY_CACHE", Path.home() / ".cache" / "fedtiny")) / "tensorflow.log"


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def quiet(path: Path | None = None) -> Iterator[Path | None]:
    """Around TensorFlow calls: descriptors 1 and 2 and ``sys.stdout``/``sys.stderr`` go to the log file
    (appended to); yields its path (None with ``FEDTINY_VERBOSE=1``, or where no log file can be opened). Nested uses share the outer one's file.
    Also usable as a decorator (``@quiet()``)."""
    global _depth, _current, _console
    quiet_env()
    if os.environ.get("FEDTINY_VERBOSE", "") not in ("", "0"):
        yield None
        return
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield _current
            finally:
                _depth -= 1
            return
        target = log_path(path)
        fd = -1
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            saved = (os.dup(1), os.dup(2))
        except OSError:  # no log file to write, or no descriptor 1/2 to redirect: leave them as they are
            if fd >= 0:
                os.close(fd)
            fd = -1
        if fd < 0:
            yield None
            return
        _flush()
        stream = open(  # closed below, after the descriptors are restored
            os.dup(fd), "a", buffering=1, encoding="utf-8", errors="replace"
        )
        py = (sys.stdout, sys.stderr)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = stream
        _depth, _current, _console = 1, target, saved[1]
        try:
            yield target
        finally:
            _console = -1
            _flush()
            sys.stdout, sys.stderr = py
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for f in (*saved, fd):
                os.close(f)
            stream.close()
            _depth, _current = 0, None
