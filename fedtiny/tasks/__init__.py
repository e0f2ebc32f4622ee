"""Reference tasks: seeded data generators with drift knobs plus Keras model builders.

``get_task(name, **params)`` returns a :class:`Task`; ``TASKS`` lists the names. Importing this package
never imports TensorFlow (only ``Task.build_model`` does, lazily), so Ray workers can import it.
"""

from __future__ import annotations

import inspect
from typing import Any

from fedtiny.errors import TaskError
from fedtiny.tasks.base import Task

TASKS: tuple[str, ...] = ("digits", "kws", "vibration")


def load_task_class(spec: str) -> type[Task]:
    """The user's Task subclass named ``"package.module:Class"``; TaskError if it cannot be used."""
    import importlib
    import os
    import sys

    module, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: a module next to where fedtiny runs is importable
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"task {spec!r}: cannot import it ({exc})") from None
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise TaskError(f"task {spec!r} is not a fedtiny.Task subclass")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise TaskError(f"task {spec!r} does not implement: {missing}")
    return obj


def get_task(name: str, **params: Any) -> Task:
    """The task called ``name`` built with ``params``; TaskError for an unknown name or parameter."""
    cls: type[Task]
    if ":" in name:
        cls = load_task_class(name)
    elif name == "vibration":
        from fedtiny.tasks.vibration import VibrationTask as cls
    elif name == "kws":
        from fedtiny.tasks.kws import KwsTask as cls
    elif name == "digits":
        from fedtiny.tasks.digits import DigitsTask as cls
    else:
        raise TaskError(f'unknown task {name!r}; expected one of: {", ".join(TASKS)}, or "module:Class"')
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = [
        n for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self" and p.kind in named
    ]
    for key in params:
        if key not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise TaskError(f"unknown parameter {key!r} for task {name!r}; valid parameters: {valid}")
    return cls(**params)


__all__ = ["TASKS", "Task", "get_task", "load_task_class"]
