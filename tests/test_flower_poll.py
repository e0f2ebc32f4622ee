"""fedtiny.runtime.flower_poll: the Simulation Engine's wait between looks for new messages (0.1 s in Flower)
is 5 ms, only over the exact loop it was written against."""

from __future__ import annotations

import threading
import time
from queue import Queue
from typing import Any

import pytest
from flwr.server.superlink.fleet.vce import vce_api

from fedtiny.runtime import flower_poll


class _State:
    """A LinkState holding queued messages per node; counts the looks."""

    def __init__(self, per_node: dict[int, list[str]]) -> None:
        self.per_node = per_node
        self.looks = 0

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        self.looks += 1
        out, self.per_node[node_id] = self.per_node[node_id][:limit], self.per_node[node_id][limit:]
        return out


def test_the_installed_flower_has_the_loop_that_is_replaced() -> None:
    assert flower_poll.source_matches(), (
        "Flower's add_messages_to_queue changed: review fedtiny/runtime/flower_poll.py"
    )


def test_install_replaces_the_loop_unless_told_to_keep_flowers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = vce_api.add_messages_to_queue
    monkeypatch.setattr(vce_api, "add_messages_to_queue", original)  # restored after the test
    monkeypatch.setenv("FEDTINY_FLOWER_POLL", "flower")
    assert not flower_poll.install() and vce_api.add_messages_to_queue is original
    monkeypatch.delenv("FEDTINY_FLOWER_POLL")
    assert flower_poll.install() and vce_api.add_messages_to_queue is flower_poll.add_messages_to_queue
    assert flower_poll.install()  # twice is harmless


def test_a_changed_flower_loop_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def other(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:  # a future Flower's loop
        return None

    monkeypatch.setattr(vce_api, "add_messages_to_queue", other)
    assert not flower_poll.source_matches()
    assert not flower_poll.install() and vce_api.add_messages_to_queue is other


def test_the_loop_hands_every_nodes_messages_over_quickly_and_stops() -> None:
    state = _State({1: ["a", "b"], 2: ["c"]})
    queue: Queue[str] = Queue()
    stop = threading.Event()
    th = threading.Thread(target=flower_poll.add_messages_to_queue, args=(state, queue, {1: 0, 2: 1}, stop))
    t0 = time.time()
    th.start()
    got = [queue.get(timeout=5) for _ in range(3)]
    assert sorted(got) == ["a", "b", "c"] and time.time() - t0 < 1  # one per node per look, looks 5 ms apart
    waits = []
    for i in range(7):  # messages pushed later are seen within milliseconds (Flower's loop: 50 ms on average)
        time.sleep(0.013 * i)
        state.per_node[2].append(f"m{i}")
        t1 = time.time()
        assert queue.get(timeout=5) == f"m{i}"
        waits.append(time.time() - t1)
    assert sorted(waits)[3] < 0.04, waits
    stop.set()
    th.join(timeout=2)
    assert not th.is_alive()
