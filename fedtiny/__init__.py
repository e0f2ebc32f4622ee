"""fedtiny: federated and on-device learning for int8 TinyML models on microcontrollers."""

from fedtiny.errors import (
    BudgetError,
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

__all__ = [
    "BudgetError",
    "DeviceError",
    "FedTinyError",
    "LinkError",
    "ModelError",
    "ProtocolError",
    "ScenarioError",
    "TaskError",
    "UpdateRejected",
    "__version__",
]
