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
    """A board answered with an error status (docs/protocol.md section 4), kept as data.

    ``status``: the status code (an int: compare it with ``fedtiny.link.messages.Status``, an IntEnum, e.g.
    ``exc.status == Status.UPDATE_PENDING``); ``status_name``: its name (``str(code)`` for a code this host does
    not know); ``msg_type`` and ``msg_type_name``: the request it answers; ``detail``: the board's own text.
    The message reads ``"TRAIN: UPDATE_PENDING: update 3 not acknowledged"``.

    The codes stay plain ints here: this module is the bottom layer and must not import fedtiny.link, and one
    table of codes (fedtiny/link/messages.py, next to the wire format) is enough.
    """

    def __init__(
        self, msg_type: int, msg_type_name: str, status: int, status_name: str, detail: str = ""
    ) -> None:
        super().__init__(f"{msg_type_name}: {status_name}: {detail}")
        self.msg_type, self.msg_type_name = int(msg_type), msg_type_name
        self.status, self.status_name = int(status), status_name
        self.detail = detail

    def __reduce__(self) -> tuple[type[DeviceError], tuple[int, str, int, str, str]]:
        # pickles with its fields (Exception pickles only args, which here is the message)
        return type(self), (self.msg_type, self.msg_type_name, self.status, self.status_name, self.detail)
