"""fedtiny.link: the board link protocol (docs/protocol.md): frames, messages, session, transports."""

from fedtiny.link.frames import Frame, FrameReader, decode_frame, encode_frame
from fedtiny.link.messages import ImageKind, MsgType, SlotState, Status, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import TRANSPORTS, InProcessTransport, SerialTransport, Transport, open_transport

__all__ = [
    "TRANSPORTS",
    "BoardSession",
    "Frame",
    "FrameReader",
    "ImageKind",
    "InProcessTransport",
    "MsgType",
    "SerialTransport",
    "SlotState",
    "Status",
    "TrainRequest",
    "Transport",
    "decode_frame",
    "encode_frame",
    "open_transport",
]
