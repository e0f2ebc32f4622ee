"""How the server reaches its gateways: Flower's Grid (one Flower node per gateway) or, for tests and
benchmarks, an in-process call of the same gateway code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from fedtiny.ondevice import Int8Head
from fedtiny.records import GatewayInstruction

if TYPE_CHECKING:
    from flwr.app import Message


class GatewayTransport(Protocol):
    """Moves the round loop's instructions to its gateways and their replies back: ``connect`` waits for
    ``gateways`` gateways, ``exchange`` sends one ``kind`` message (train/evaluate) per gateway and returns the
    replies in gateway order plus the number that failed. (Not the board link's byte transport,
    fedtiny.link.transport.Transport.)"""

    def connect(self, gateways: int) -> None: ...

    def exchange(
        self, kind: str, head: Int8Head, cfg: GatewayInstruction, per_gateway: dict[int, np.ndarray]
    ) -> tuple[list[dict[str, np.ndarray]], int]: ...


GatewayHandler = Callable[[str, Int8Head, GatewayInstruction, np.ndarray], dict[str, np.ndarray]]


class InlineTransport:
    """The gateway code (``fedtiny.clients.simulated.gateway.handle``) called in-process: no Flower, no Ray.

    The handler is passed in, so that fedtiny/ does not import fedtiny/clients/ (the caller wires them together).
    """

    def __init__(self, handle: GatewayHandler) -> None:
        self.handle = handle

    def connect(self, gateways: int) -> None:
        pass

    def exchange(
        self, kind: str, head: Int8Head, cfg: GatewayInstruction, per_gateway: dict[int, np.ndarray]
    ) -> tuple[list[dict[str, np.ndarray]], int]:
        return [self.handle(kind, head, cfg, per_gateway[g]) for g in sorted(per_gateway)], 0


class MessageGrid(Protocol):
    """What :class:`FlowerTransport` uses of a Flower Grid (``flwr.serverapp.Grid``, ``fedtiny.interrupt.StoppableGrid``)."""

    def get_node_ids(self) -> Iterable[int]: ...

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]: ...


class FlowerTransport:
    """One Flower message per gateway through the ServerApp's Grid."""

    def __init__(self, grid: MessageGrid, timeout_s: float = 600.0) -> None:
        self.grid = grid
        self.timeout_s = timeout_s
        self.node_of: dict[int, int] = {}

    def connect(self, gateways: int) -> None:
        from flwr.app import Message, RecordDict

        deadline = time.time() + self.timeout_s
        while True:  # gateways connect asynchronously
            nodes = list(self.grid.get_node_ids())
            if len(nodes) >= gateways or time.time() > deadline:
                break
            time.sleep(0.2)
        replies = list(
            self.grid.send_and_receive(
                [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes],
                timeout=self.timeout_s,
            )
        )
        self.node_of = {
            int(cast(int, m.content.config_records["gateway"]["gateway"])): m.metadata.src_node_id
            for m in replies
            if not m.has_error()
        }
        missing = set(range(gateways)) - set(self.node_of)
        if missing:
            errors = sorted({str(m.error.reason).strip().splitlines()[-1] for m in replies if m.has_error()})
            raise RuntimeError(
                f"gateways {sorted(missing)[:10]} did not answer the initial query: {'; '.join(errors) or 'timeout'}"
            )

    def exchange(
        self, kind: str, head: Int8Head, cfg: GatewayInstruction, per_gateway: dict[int, np.ndarray]
    ) -> tuple[list[dict[str, np.ndarray]], int]:
        from flwr.app import Message, RecordDict

        from fedtiny.records import arrays_to_record, head_to_record, record_to_arrays

        hrec = head_to_record(head)
        crec = cfg.to_config()
        msgs = [
            Message(
                RecordDict({"head": hrec, "config": crec, "devices": arrays_to_record(devices=devs)}),
                dst_node_id=self.node_of[g],
                message_type=kind,
            )
            for g, devs in per_gateway.items()
        ]
        replies = list(self.grid.send_and_receive(msgs, timeout=self.timeout_s))
        key = "updates" if kind == "train" else "results"
        # in gateway order, never arrival order: every float sum downstream then has one order
        gateway_of = {node: g for g, node in self.node_of.items()}
        ok = sorted(
            (m for m in replies if not m.has_error()),
            key=lambda m: (gateway_of.get(m.metadata.src_node_id, len(gateway_of)), m.metadata.src_node_id),
        )
        parts = [record_to_arrays(m.content.array_records[key]) for m in ok]
        return parts, len(msgs) - len(parts)


__all__ = ["FlowerTransport", "GatewayTransport", "InlineTransport"]
