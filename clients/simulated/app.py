"""Flower ClientApp of a simulated gateway (one Flower node = one gateway serving many devices).

Messages (see fedtiny/server/app.py): ``query`` → which devices this gateway serves; ``train`` → the int8
head plus the sampled devices → per-device float heads; ``evaluate`` → per-device correct counts.
Imports no TensorFlow: only numpy, the on-device spec and memory-mapped fleet data.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.simulated.gateway import evaluate_devices, fleet_data, train_devices
from fedtiny.ondevice import TrainConfig
from fedtiny.records import arrays_to_record, head_from_record

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    gateway = int(context.node_config.get("partition-id", 0))
    return Message(RecordDict({"gateway": ConfigRecord({"gateway": gateway})}), reply_to=msg)


def _devices(cfg: ConfigRecord) -> np.ndarray:
    return np.asarray(cfg["devices"], dtype=np.int64)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = msg.content.config_records["config"]
    head = head_from_record(msg.content.array_records["head"])
    tc = TrainConfig(
        epochs=int(cfg["epochs"]), batch_size=int(cfg["batch-size"]), lr=float(cfg["lr"]),
        momentum=float(cfg["momentum"]), weight_decay=float(cfg["weight-decay"]), prox_mu=float(cfg["prox-mu"]),
    )
    out = train_devices(
        head, fleet_data(str(cfg["fleet-dir"])), int(cfg["segment"]), _devices(cfg), tc,
        int(cfg["cache-size"]), int(cfg["seed"]), int(cfg["round"]),
    )
    return Message(RecordDict({"updates": arrays_to_record(**out)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = msg.content.config_records["config"]
    head = head_from_record(msg.content.array_records["head"])
    out = evaluate_devices(head, fleet_data(str(cfg["fleet-dir"])), int(cfg["segment"]), _devices(cfg))
    return Message(RecordDict({"results": arrays_to_record(**out)}), reply_to=msg)
