"""Registry and shared Task behaviour (no TensorFlow, no espeak-ng needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedtiny.errors import TaskError
from fedtiny.tasks import TASKS, Task, get_task


def test_tasks_tuple() -> None:
    assert TASKS == ("digits", "kws", "vibration")


def test_unknown_task_message() -> None:
    with pytest.raises(TaskError, match=r"unknown task 'x'; expected one of: digits, kws, vibration"):
        get_task("x")


def test_unknown_parameter() -> None:
    with pytest.raises(TaskError, match="unknown parameter 'bogus' for task 'vibration'"):
        get_task("vibration", bogus=1)


@pytest.mark.parametrize("name", ["vibration", "digits"])
def test_task_attributes(name: str) -> None:
    task = get_task(name)
    assert isinstance(task, Task)
    assert task.name == name
    assert len(task.classes) == len(set(task.classes)) >= 2
    assert set(task.default_condition()) == set(task.drift_knobs)
    assert all(isinstance(v, float) for v in task.default_condition().values())
    assert all(isinstance(d, str) and d for d in task.drift_knobs.values())
    assert task.generate(np.zeros(0, dtype=int), np.random.default_rng(0)).shape == (0, *task.input_shape)


@pytest.mark.parametrize("name", ["vibration", "digits"])
def test_condition_and_label_errors(name: str) -> None:
    task = get_task(name)
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match=r"unknown drift knob 'nope'.*valid knobs: "):
        task.generate(np.array([0]), rng, {"nope": 1.0})
    knob = next(iter(task.drift_knobs))
    with pytest.raises(TaskError, match=knob):
        task.generate(np.array([0]), rng, {knob: float("nan")})
    with pytest.raises(TaskError, match="labels"):
        task.generate(np.array([len(task.classes)]), rng)


def test_import_without_tensorflow() -> None:
    code = (
        "import sys; import fedtiny.tasks, fedtiny.tasks.vibration, fedtiny.tasks.digits, fedtiny.tasks.kws, "
        "fedtiny.tasks.loaders; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
