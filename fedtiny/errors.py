"""One exception hierarchy for fedtiny: every error a user can cause is a FedTinyError.

Messages are meant to be printed as one line: they name the file/field/frame and what was expected.
"""

from __future__ import annotations


class FedTinyError(Exception):
    """Base class of every error fedtiny raises on purpose."""


class ScenarioError(FedTinyError):
    """A scenario file or override is invalid (unknown key, wrong type, out of range, missing file)."""


class TaskError(FedTinyError):
    """A task name, task parameter or dataset on disk is invalid."""


class DataError(FedTinyError):
    """A user's recordings or front end are invalid (unreadable file, bad label, NaN, unknown knob)."""


class ModelError(FedTinyError):
    """A model file is not what fedtiny expects (not int8, no FULLY_CONNECTED head, shape mismatch)."""


class BudgetError(FedTinyError):
    """A board cannot hold what the scenario asks of it (RAM, flash)."""


class UpdateRejected(FedTinyError):
    """A device update was refused (NaN/Inf, wrong shape, absurd norm)."""


class LinkError(FedTinyError):
    """A link to a board failed: timeout, disconnect, corrupt frame."""


class ProtocolError(LinkError):
    """Bytes on the link do not follow docs/protocol.md."""


class DeviceError(FedTinyError):
    """A board answered with an error status."""
