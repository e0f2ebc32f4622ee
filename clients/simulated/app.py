"""Flower ClientApp of a simulated gateway (one Flower node = one gateway serving many devices).

Messages (see fedtiny/server/fleet_server.py): ``query`` → which gateway this node is; ``train`` → the int8
head, the config and the sampled devices → per-device float (or int8-delta) heads; ``evaluate`` → per-device
correct counts. Imports no TensorFlow: only numpy, the on-device spec and memory-mapped fleet data.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.simulated.gateway import handle
from fedtiny.records import arrays_to_record, head_from_record

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    gateway = int(context.node_config.get("partition-id", 0))
    return Message(RecordDict({"gateway": ConfigRecord({"gateway": gateway})}), reply_to=msg)


def _work(kind: str, key: str, msg: Message) -> Message:
    cfg = dict(msg.content.config_records["config"])
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
