"""What a gateway does with its boards each round, over the link protocol (docs/protocol.md).

Per round: acknowledge the updates the server aggregated last round, redeploy the global int8 head safely
(A/B slot, SHA-256 and HMAC verified, booted as test, confirmed by a golden self-test), optionally replay
samples, train, read back the signed update. A board that fails is reported and the round goes on.
Updates stay on the board until the server has them (the ack list comes with the next round), so an update
is never lost by a dropped reply and never counted twice (the server also deduplicates by update id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtiny.config.schema import LabelsSection
from fedtiny.errors import DeviceError, FedTinyError, UpdateRejected
from fedtiny.fleet.data import LABELS_FILE
from fedtiny.fleet.labels import LabelSchedule
from fedtiny.link.blobs import UpdateBlob, encode_head_patch
from fedtiny.link.messages import TRAIN_FIXED, TRAIN_PSEUDO, Cap, Status, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.signing import device_key
from fedtiny.link.transport import open_transport
from fedtiny.ondevice import Int8Head


class BoardUpdate(TypedDict, total=False):
    """What a board answered (:attr:`BoardOutcome.update`; empty: nothing). A train message: its update
    (``device_id`` ... ``bias``) and, when labels are partial (docs/labels.md), what it trained on
    (``labels_used`` ... ``pseudo_used``); an evaluate message: ``n``, ``correct`` and ``loss``; describe: the
    board's identity (``board`` ... ``slot``, :func:`describe_board`)."""

    device_id: int
    update_id: int
    round: int
    num_examples: int
    loss: float
    weights: np.ndarray
    bias: np.ndarray
    labels_used: int
    pseudo_used: int
    labels_late: int
    labels_wrong: int
    n: int
    correct: int
    board: str
    firmware: str
    protocol: int
    capabilities: str
    model: str
    cache: int
    slot: int


@dataclass(frozen=True)
class ReplayLabels:
    """The labels of a replay trial (``labels.json`` of the replay directory, written by
    :func:`fedtiny.field.replay.write_replay_labels`): the scenario's label section, its seed, the segments' first rounds."""

    section: LabelsSection
    seed: int
    segment_starts: list[int]


@dataclass
class BoardOutcome:
    uri: str
    device_id: int = -1
    error: str = ""
    status: str = ""  # the board's status name of the error (DeviceError.status_name), "" otherwise
    update: BoardUpdate = field(default_factory=BoardUpdate)
    deployed: bool = False  # it received (and, signed, verified) a new head in this message


class Replay:
    """Recorded int8 features per device (written by ``fedtiny serve``) to push to boards in replay trials, and
    the labels the boards get (docs/labels.md "Field trials")."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / LABELS_FILE
        self.labels: ReplayLabels | None = None
        if path.exists():
            doc = json.loads(path.read_text())
            self.labels = ReplayLabels(
                LabelsSection(**doc["labels"]), int(doc["seed"]), [int(r) for r in doc["segment_starts"]]
            )

    def samples(self, device_id: int, segment: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / f"device_{device_id}.npz") as z:
            seg = min(segment, int(z["segments"]) - 1)
            return z[f"{split}_feats_{seg}"], z[f"{split}_labels_{seg}"]

    def schedule(self, num_classes: int) -> LabelSchedule | None:
        """The trial's label process (fedtiny/fleet/labels.py); None: every sample labelled at once."""
        if self.labels is None:
            return None
        return LabelSchedule(self.labels.section, self.labels.seed, num_classes)

    def given(
        self, device_id: int, segment: int, round_: int, y: np.ndarray, sched: LabelSchedule
    ) -> np.ndarray:
        """The label board ``device_id`` holds in ``round_`` for each replayed training sample of ``segment``
        (true classes ``y``; -1: none yet or never). The samples count as collected when the segment starts
        (sample number ``segment * 2^20 + i``); labels follow the simulation's rules (docs/labels.md)."""
        assert self.labels is not None
        starts = self.labels.segment_starts
        start = starts[min(segment, len(starts) - 1)]
        dev = np.array([device_id], dtype=np.int64)
        y2 = np.asarray(y, dtype=np.int64)[None, :]
        j = (segment << 20) + np.arange(y2.shape[1], dtype=np.int64)[None, :]
        has = sched.has_label(dev, j, y2)
        budget = sched.section.budget_per_round
        if budget > 0:  # the first `budget` labelled samples of the segment's collection
            has &= np.cumsum(has, axis=1) - has < budget
        has &= start + sched.section.delay_rounds <= round_
        out: np.ndarray = np.where(has, sched.observed(dev, j, y2), -1)[0]
        return out


class GatewayBoards:
    """The boards one gateway serves, opened fresh for each Flower message."""

    def __init__(
        self,
        uris: list[str],
        key: bytes | None,
        replay: Replay | None = None,
        timeout: float = 2.0,
        signing_key: Ed25519PrivateKey | None = None,
        update_master: bytes | None = None,
    ) -> None:
        """`key`: the HMAC fleet key (images, and update tags of boards without their own key); `signing_key`:
        heads go as Ed25519-signed MCUboot images (boards with public keys); `update_master`: every board's
        update tag is checked with its per-device key (HKDF of this master and its device id)."""
        self.uris, self.key, self.replay, self.timeout = uris, key, replay, timeout
        self.signing_key, self.update_master = signing_key, update_master
        self.last_labels = BoardUpdate()  # the late and wrong labels of the last board's training samples

    def _sessions(self) -> Iterator[tuple[str, BoardSession | None, str]]:
        for uri in self.uris:
            s = None
            try:
                s = BoardSession(open_transport(uri), timeout=self.timeout, key=self.key)
                s.hello()
            except (FedTinyError, OSError) as exc:
                if s is not None:
                    s.close()
                yield uri, None, f"{uri}: {exc}"
                continue
            try:
                yield uri, s, ""
            finally:
                s.close()

    def _deploy(
        self, s: BoardSession, head: Int8Head, golden: np.ndarray, signed_image: bytes | None
    ) -> bool:
        """Redeploy ``head`` unless the board runs it (True: redeployed); ``signed_image``: the server's signed
        image of it."""
        if s.get_head().equals(head):
            return False
        s.deploy_head(head, golden, self.key, signing_key=self.signing_key, signed_image=signed_image)
        return True

    def _read_update(self, s: BoardSession) -> UpdateBlob:
        """The pending update, its tag checked with the board's per-device key (with a master) or the fleet key;
        UpdateRejected (one line) if the device id or the tag does not match."""
        if self.update_master is None or s.info is None:
            return s.read_update()
        if not s.info.capabilities & Cap.DEVICE_KEY:
            raise UpdateRejected(
                f"board {s.info.device_id} has no per-device update key (capability DEVICE_KEY); "
                "this gateway accepts only updates tagged with one"
            )
        return s.read_update(device_key(self.update_master, s.info.device_id))

    def _push(self, s: BoardSession, segment: int, split: str) -> None:
        if self.replay is not None and s.info is not None:
            feats, labels = self.replay.samples(s.info.device_id, segment, split)
            cap = s.info.cache_capacity
            s.push_samples(feats[:cap], labels[:cap], clear=True)

    def _push_train(self, s: BoardSession, segment: int, round_: int, num_classes: int) -> int:
        """Replay the training samples; with partial labels (docs/labels.md) push them with the labels the board
        held at the end of the last round, then send the labels that arrive this round in LABEL messages (the
        board's cache is rebuilt each round: evaluation replaced it). Returns the labelled samples, -1 when every
        sample is labelled."""
        assert self.replay is not None and s.info is not None
        sched = self.replay.schedule(num_classes)
        if sched is None:
            self._push(s, segment, "train")
            return -1
        feats, y = self.replay.samples(s.info.device_id, segment, "train")
        feats, y = feats[: s.info.cache_capacity], y[: s.info.cache_capacity]
        now = self.replay.given(s.info.device_id, segment, round_, y, sched)
        before = self.replay.given(s.info.device_id, segment, round_ - 1, y, sched)
        pushed = s.push_samples_ids(feats, before, clear=True)
        late = (now >= 0) & (before < 0)
        if late.any():
            s.label(pushed.ids[late], now[late])
        self.last_labels = {
            "labels_late": int((now >= 0).sum()) if sched.section.delay_rounds > 0 else 0,
            "labels_wrong": int(((now >= 0) & (now != y)).sum()),
        }
        return int((now >= 0).sum())

    def _each(
        self,
        head: Int8Head,
        golden: np.ndarray,
        acks: dict[int, int],
        work: Callable[[BoardSession, BoardOutcome], None],
        signed_image: bytes | None = None,
        sampled: list[int] | None = None,
    ) -> list[BoardOutcome]:
        """Per board: acknowledge what the server has, redeploy the global head, then ``work``; a board not in
        ``sampled`` (None: every board) is only acknowledged and left out of the outcomes."""
        out = []
        for uri, s, error in self._sessions():
            o = BoardOutcome(uri, error=error)
            out.append(o)
            if s is None:
                continue
            try:
                assert s.info is not None
                o.device_id = s.info.device_id
                if o.device_id in acks:
                    s.ack_update(acks[o.device_id])
                if sampled is not None and o.device_id not in sampled:
                    out.pop()
                    continue
                o.deployed = self._deploy(s, head, golden, signed_image)
                work(s, o)
            except (FedTinyError, OSError) as exc:
                o.error = "; ".join(filter(None, [o.error, f"{uri}: {exc}"]))
                if isinstance(exc, DeviceError):
                    o.status = exc.status_name
        return out

    def train(
        self,
        head: Int8Head,
        golden: np.ndarray,
        req: TrainRequest,
        segment: int,
        acks: dict[int, int],
        signed_image: bytes | None = None,
        sampled: list[int] | None = None,
    ) -> list[BoardOutcome]:
        """``sampled``: the device ids that train (None: every board); the others sit this round out."""

        def work(s: BoardSession, o: BoardOutcome) -> None:
            labelled = self._push_train(s, segment, req.round, head.num_classes) if self.replay else -1
            this = _pseudo_for(_arithmetic_for(s, req), self.replay, head.num_classes)
            try:
                s.train(this)
            except DeviceError as exc:
                if exc.status == Status.CACHE_EMPTY and labelled == 0:
                    return  # no label yet and no confident pseudo-label: nothing to train on, no update
                if exc.status != Status.UPDATE_PENDING:
                    raise
                try:
                    stale = self._read_update(
                        s
                    )  # an update the server never received: report, don't train twice
                except (
                    UpdateRejected
                ) as bad:  # spoofed or corrupt: drop it, or the board could never train again
                    o.error = f"{o.uri}: dropped a pending update that failed verification ({bad})"
                    s.ack_update(s.pending_update_id())
                    s.train(this)
                    o.update = _update_dict(self._read_update(s))
                    return
                if stale.round == req.round:
                    o.update = _update_dict(stale)
                    return
                s.ack_update(stale.update_id)
                s.train(this)
            o.update = _update_dict(self._read_update(s))
            if labelled >= 0:  # what the board trained on: the labels it was given, and its own
                o.update["labels_used"] = labelled
                o.update["pseudo_used"] = max(int(o.update.get("num_examples", 0)) - labelled, 0)
                o.update.update(self.last_labels)

        return self._each(head, golden, acks, work, signed_image, sampled)

    def describe(self) -> list[BoardOutcome]:
        """Each board's identity (no state change): device id, firmware, capabilities and the model it runs."""
        out = []
        for uri, s, error in self._sessions():
            o = BoardOutcome(uri, error=error)
            out.append(o)
            if s is None or s.info is None:
                continue
            try:
                o.device_id = s.info.device_id
                o.update = describe_board(s)
            except (FedTinyError, OSError) as exc:
                o.error = f"{uri}: {exc}"
        return out

    def evaluate(
        self,
        head: Int8Head,
        golden: np.ndarray,
        segment: int,
        acks: dict[int, int],
        signed_image: bytes | None = None,
    ) -> list[BoardOutcome]:
        def work(s: BoardSession, o: BoardOutcome) -> None:
            self._push(s, segment, "test")
            ev = s.evaluate()
            o.update = {"n": ev.n, "correct": round(ev.accuracy * ev.n), "loss": ev.loss}

        return self._each(head, golden, acks, work, signed_image)


def capability_names(caps: int) -> str:
    return "|".join(c.name for c in Cap if caps & c and c.name) or "none"


def describe_board(s: BoardSession) -> BoardUpdate:
    """What a gateway prints about a board at start (from HELLO and the active head)."""
    assert s.info is not None
    i = s.info
    head = s.get_head()
    digest = hashlib.sha256(encode_head_patch(head)).hexdigest()[:12]
    model = f"int8 head {head.weights.shape[0]}x{head.weights.shape[1]} (sha256 {digest})"
    if i.raw_input_len:
        model += f" + backbone (raw input {i.raw_input_len})"
    return {
        "board": i.board_name,
        "firmware": i.fw_version,
        "protocol": i.proto_version,
        "capabilities": capability_names(i.capabilities),
        "model": model,
        "cache": i.cache_capacity,
        "slot": i.active_slot,
    }


def _arithmetic_for(s: BoardSession, req: TrainRequest) -> TrainRequest:
    """Boards without an FPU train in fixed point (docs/ondevice.md §3b): ask for it when that is all they do."""
    caps = s.info.capabilities if s.info else 0
    if caps & Cap.FIXED_TRAIN and not caps & Cap.FLOAT_TRAIN:
        return replace(req, flags=req.flags | TRAIN_FIXED)
    return req


def _pseudo_for(req: TrainRequest, replay: Replay | None, num_classes: int) -> TrainRequest:
    """TRAIN with flag PSEUDO when the trial's labels turn pseudo-labels on (docs/labels.md)."""
    sched = replay.schedule(num_classes) if replay is not None else None
    if sched is None or sched.threshold is None:
        return req
    return replace(
        req,
        flags=req.flags | TRAIN_PSEUDO,
        pseudo_margin=sched.threshold,
        pseudo_weight=float(np.float32(sched.section.pseudo_weight)),
    )


def _update_dict(u: UpdateBlob) -> BoardUpdate:
    return {
        "device_id": u.device_id,
        "update_id": u.update_id,
        "round": u.round,
        "num_examples": u.num_examples,
        "loss": u.loss,
        "weights": u.weights,
        "bias": u.bias,
    }
