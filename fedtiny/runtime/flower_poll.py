"""A shorter wait between the Simulation Engine's looks for new messages.

Flower's Simulation Engine (flwr 1.42, ``flwr.server.superlink.fleet.vce.vce_api``) hands the ServerApp's
messages to its Ray workers from one thread, ``add_messages_to_queue``, that looks into the LinkState for every
node and then waits 0.1 s. So every round of a fleet waits 0 to 100 ms (50 on average) before its first
gateway starts: at 100,000 devices, whose rounds take about a second, that is 5% of the round, measured as
30-110 ms from the ServerApp's push to the gateways' start (benchmarks/README.md).

:func:`install` replaces that function, in the process that runs the engine, with the same loop waiting
:data:`POLL_S` (5 ms), or four times as long as one look took, whichever is longer, so that an engine with
thousands of nodes does not hold the interpreter in its looks. It does so only when the installed function is
the one it was written against (the hash of its source), so a Flower release that changes the loop keeps its
own; ``FEDTINY_FLOWER_POLL=flower`` keeps Flower's wait in any case. Nothing else changes: the same
``get_message_ins(node_id, limit=1)`` per node, the same queue, the same stop event.

Called where the engine is started: :func:`fedtiny.runner.simulate` (in-process) and
:mod:`fedtiny.runtime.clientapp`, which Flower's simulation process loads before it starts the engine.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
import time
from queue import Queue
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.server.superlink.linkstate import LinkState

#: seconds between looks (at least)
POLL_S = 0.005
#: sha256 of the source of flwr 1.42's ``add_messages_to_queue`` (the function replaced)
FLOWER_SOURCE_SHA256 = "953f4bd41a931a7779a4a670ab17b633f6e20b08a0128535328674466419777a"


def add_messages_to_queue(
    state: LinkState, queue: Queue[Message], nodes_mapping: dict[int, int], f_stop: threading.Event
) -> None:
    """Flower's loop (put each node's next message in the queue), waiting POLL_S between looks."""
    while not f_stop.is_set():
        t0 = time.perf_counter()
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(max(POLL_S, 4 * (time.perf_counter() - t0)))


def source_matches() -> bool:
    """Whether the installed Flower's loop is the one :func:`add_messages_to_queue` replaces."""
    from flwr.server.superlink.fleet.vce import vce_api

    fn = getattr(vce_api, "add_messages_to_queue", None)
    if fn is None:
        return False
    if fn is add_messages_to_queue:
        return True
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return hashlib.sha256(src.encode()).hexdigest() == FLOWER_SOURCE_SHA256


def install() -> bool:
    """Replace the engine's loop (see the module docstring); True when the shorter wait is in place."""
    if os.environ.get("FEDTINY_FLOWER_POLL", "").strip().lower() == "flower" or not source_matches():
        return False
    from flwr.server.superlink.fleet.vce import vce_api

    vce_api.add_messages_to_queue = add_messages_to_queue
    return True


__all__ = ["POLL_S", "add_messages_to_queue", "install", "source_matches"]
