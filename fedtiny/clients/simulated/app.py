"""Flower ClientApp of a simulated gateway (one Flower node = one gateway serving many devices).

Messages (see fedtiny/server/fleet_server.py): ``query`` → which gateway this node is; ``train`` → the int8
head, the config and the sampled devices → per-device float (or int8-delta) heads; ``evaluate`` → per-device
correct counts. Imports no TensorFlow: only numpy, the on-device spec and memory-mapped fleet data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedtiny.clients.simulated.gateway import handle
from fedtiny.records import GatewayInstruction, arrays_to_record, head_from_record

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    gateway = int(context.node_config.get("partition-id", 0))
    return Message(RecordDict({"gateway": ConfigRecord({"gateway": gateway})}), reply_to=msg)


_NOTED: set[str] = set()


def _note_ray_node(fleet_dir: str) -> None:
    """Record which Ray node this gateway process runs on (``fleet/ray_nodes/<node id>``, once per process):
    the summary says which nodes of a cluster did work. The fleet directory is shared by every node anyway
    (the feature pools are memory-mapped from it)."""
    ray = sys.modules.get("ray")
    if fleet_dir in _NOTED or ray is None or not ray.is_initialized():
        return
    _NOTED.add(fleet_dir)
    try:
        d = Path(fleet_dir) / "ray_nodes"
        d.mkdir(exist_ok=True)
        (d / str(ray.get_runtime_context().get_node_id())).touch()
    except OSError:  # a read-only or missing fleet directory must not fail the round
        pass


def _work(kind: str, key: str, msg: Message) -> Message:
    cfg = GatewayInstruction.from_config(msg.content.config_records["config"])
    _note_ray_node(cfg.fleet_dir)
    head = head_from_record(msg.content.array_records["head"])
    devices = msg.content.array_records["devices"]["devices"].numpy()
    out = handle(kind, head, cfg, devices)
    return Message(RecordDict({key: arrays_to_record(**out)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _work("train", "updates", msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _work("evaluate", "results", msg)
