"""fedtiny: federated and on-device learning for int8 TinyML models on microcontrollers."""

from fedtiny.errors import (
    BudgetError,
    DataError,
    DeviceError,
    FedTinyError,
    LinkError,
    ModelError,
    ProtocolError,
    ScenarioError,
    TaskError,
    UpdateRejected,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``fedtiny.Task``: the data interface a custom task implements (imported lazily: numpy only)."""
    if name == "Task":
        from fedtiny.tasks.base import Task

        return Task
    raise AttributeError(name)


__all__ = [
    "BudgetError",
    "DataError",
    "DeviceError",
    "FedTinyError",
    "LinkError",
    "ModelError",
    "ProtocolError",
    "ScenarioError",
    "Task",
    "TaskError",
    "UpdateRejected",
    "__version__",
]
