"""Flower ClientApp of a field-trial gateway: a SuperNode's app that drives real (or virtual) boards.

Node config (``flower-supernode --node-config``, written by ``fedtiny gateway``):
``devices`` space-separated link URIs (``serial:///dev/ttyACM0``, ``socket://127.0.0.1:7001``, ``ble://ADDR``),
``fleet-key`` the per-fleet HMAC key in hex (optional), ``signing-key`` a PEM Ed25519 private key: heads go as
signed MCUboot images (optional), ``update-master`` a file holding the hex master secret of the per-device update
keys: each board's update tag is checked with its own key (optional; both may also come from the environment
variables ``FEDTINY_SIGNING_KEY`` and ``FEDTINY_UPDATE_MASTER_FILE``, file paths, which ``fedtiny gateway``
sets). Better: the server signs (``fedtiny serve --signing-key``) and its train/evaluate messages carry the
signed image (ArrayRecord ``signed``, array ``image``, uint8), which this gateway forwards; it then holds no
private key. ``replay`` a replay directory (optional), ``events`` a
JSON-lines file where each message's per-board outcome is appended (``fedtiny gateway`` prints it; optional).
The last round's evaluate carries ``last = true`` (the gateway process stops once the SuperLink closes); a
``query`` message with ``end = true`` ends the trial early (the ServerApp failed).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedtiny.clients.gateway.boards import BoardOutcome, GatewayBoards, Replay
from fedtiny.link.messages import TrainRequest
from fedtiny.link.signing import load_private_key, read_hex_key
from fedtiny.records import BoardReport, GatewayReply, RoundInstruction, TrialEnd

app = ClientApp()


def _boards(context: Context) -> GatewayBoards:
    cfg = context.node_config
    uris = str(cfg.get("devices", "")).split()
    key = bytes.fromhex(str(cfg.get("fleet-key", ""))) or None
    replay = Replay(str(cfg["replay"])) if cfg.get("replay") else None
    signing = str(cfg.get("signing-key", "") or os.environ.get("FEDTINY_SIGNING_KEY", ""))
    master = str(cfg.get("update-master", "") or os.environ.get("FEDTINY_UPDATE_MASTER_FILE", ""))
    return GatewayBoards(
        uris,
        key,
        replay,
        signing_key=load_private_key(signing) if signing else None,
        update_master=read_hex_key(master, "update master secret") if master else None,
    )


class BoardDetail(TypedDict, total=False):
    """What a board did in a message, in the events file: evaluated (``n``, ``correct``) or trained (its
    update, and with partial labels what it trained on); nothing when it failed or sat the round out."""

    n: int
    correct: int
    num_examples: int
    loss: float
    update_id: int
    labels_used: int
    labels_late: int
    labels_wrong: int
    pseudo_used: int


class BoardEvent(BoardDetail):
    """A board's outcome in a line of the events file: its link, device id (-1: not reached), error ("" = ok)."""

    uri: str
    device_id: int
    error: str


class GatewayEvent(TypedDict):
    """A line of the gateway's events file (``fedtiny gateway`` tails it and prints it): the per-board outcome
    of a ``train`` or ``evaluate`` message (``round``, ``last``, ``boards``), or the trial's ``end`` (``summary``)."""

    time: float
    event: str
    round: NotRequired[int]
    last: NotRequired[bool]
    boards: NotRequired[list[BoardEvent]]
    summary: NotRequired[str]


def _event(context: Context, record: GatewayEvent) -> None:
    """Append one line to the gateway's events file (``fedtiny gateway`` tails it and prints it)."""
    path = str(context.node_config.get("events", ""))
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")


def _detail(o: BoardOutcome) -> BoardDetail:
    u = o.update
    if "n" in u:
        return {"n": int(u["n"]), "correct": int(u["correct"])}
    if "num_examples" in u:
        d: BoardDetail = {
            "num_examples": int(u["num_examples"]),
            "loss": float(u["loss"]),
            "update_id": int(u["update_id"]),
        }
        for k in LABEL_KEYS:
            if k in u:
                d[k] = int(u[k])
        return d
    return {}


def _reply(
    msg: Message,
    context: Context,
    kind: str,
    ins: RoundInstruction,
    outcomes: list[BoardOutcome],
    results: dict[str, np.ndarray],
) -> Message:
    """Results plus every board's outcome, aligned: uri, device id (-1: not reached) and error ("" = ok)."""
    _event(
        context,
        {
            "time": time.time(),
            "event": kind,
            "round": ins.round,
            "last": ins.last,
            "boards": [
                {"uri": o.uri, "device_id": o.device_id, "error": o.error, **_detail(o)} for o in outcomes
            ],
        },
    )
    boards = [BoardReport(o.uri, o.device_id, o.error, o.status) for o in outcomes]
    # the boards that received a new head in this message (signed: verified it); the server counts them
    results["deployed"] = np.array([o.device_id for o in outcomes if o.deployed], dtype=np.int64)
    return Message(GatewayReply(results, boards).to_record(), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    uris = str(context.node_config.get("devices", "")).split()
    end = TrialEnd.from_record(msg.content)
    if end is not None:
        _event(context, {"time": time.time(), "event": "end", "summary": end.summary})
    return Message(RecordDict({"gateway": ConfigRecord({"devices": uris or [""]})}), reply_to=msg)


#: what a board trained on when labels are partial (docs/labels.md), per board in the reply and the event log
LabelKey = Literal["labels_used", "labels_late", "labels_wrong", "pseudo_used"]
LABEL_KEYS: tuple[LabelKey, ...] = ("labels_used", "labels_late", "labels_wrong", "pseudo_used")


@app.train()
def train(msg: Message, context: Context) -> Message:
    ins = RoundInstruction.from_record(msg.content)
    t = ins.train
    req = TrainRequest(
        t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, t.prox_mu, ins.seed, ins.round
    )
    outcomes = _boards(context).train(
        ins.head, ins.golden, req, ins.segment, ins.acks, ins.signed_image, ins.sampled
    )
    ok = [o.update for o in outcomes if o.update and not o.error]
    c, d = ins.head.weights.shape
    results: dict[str, np.ndarray] = {
        "device_ids": np.array([u["device_id"] for u in ok], dtype=np.int64),
        "update_ids": np.array([u["update_id"] for u in ok], dtype=np.int64),
        "rounds": np.array([u["round"] for u in ok], dtype=np.int64),
        "num_examples": np.array([u["num_examples"] for u in ok], dtype=np.int64),
        "loss": np.array([u["loss"] for u in ok], dtype=np.float32),
        "weights": np.stack([u["weights"] for u in ok]).astype(np.float32)
        if ok
        else np.zeros((0, c, d), np.float32),
        "bias": np.stack([u["bias"] for u in ok]).astype(np.float32) if ok else np.zeros((0, c), np.float32),
    }
    if ok and all("labels_used" in u for u in ok):  # partial labels (docs/labels.md): what each board used
        for k in LABEL_KEYS:
            results[k] = np.array([u[k] for u in ok], dtype=np.int64)
    return _reply(msg, context, "train", ins, outcomes, results)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    ins = RoundInstruction.from_record(msg.content)
    outcomes = _boards(context).evaluate(ins.head, ins.golden, ins.segment, ins.acks, ins.signed_image)
    ok = [o for o in outcomes if o.update and not o.error]
    results = {
        "device_ids": np.array([o.device_id for o in ok], dtype=np.int64),
        "correct": np.array([o.update["n"] and o.update["correct"] for o in ok], dtype=np.int64),
        "total": np.array([o.update["n"] for o in ok], dtype=np.int64),
    }
    return _reply(msg, context, "evaluate", ins, outcomes, results)
