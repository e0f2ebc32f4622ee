"""The field-trial round loop: devices are whatever boards the gateways report; every update is counted once.

Per round: a train message per gateway (global int8 head, golden self-test vectors, hyper-parameters, and the
acknowledgements of the updates aggregated last round), updates deduplicated by (device id, update id),
then the simulation's aggregation step (fedtiny/server/updates.py: validated, Flower's strategy with the boards
as its clients, re-quantized); then an evaluate message that redeploys the new head to every board
and measures it there.

Only the sampled boards train: ``max(1, round(strategy.fraction * boards))`` of them, drawn with the simulation's
seeded rule (fedtiny/server/fleet_model.py ``sample_devices``) from the boards that answered the last evaluate
message (board i is the simulation's device i - 1), so a trial and a simulation of one scenario sample alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from fedtiny.config import Scenario
from fedtiny.errors import FedTinyError
from fedtiny.field.deploy_signing import DeploySigner
from fedtiny.field.replay import segment_of_round
from fedtiny.model.flatbuffer import model_io, read_tail
from fedtiny.ondevice import Int8Head
from fedtiny.ondevice.head import predict_through
from fedtiny.plan.resolve import strategy_spec, train_config
from fedtiny.records import (
    BoardReport,
    GatewayReply,
    RoundInstruction,
    TrialEnd,
    float_update_bytes,
    head_patch_bytes,
)
from fedtiny.results import RoundRow
from fedtiny.server.fleet_model import sample_devices
from fedtiny.server.strategy import DeviceStrategy
from fedtiny.server.updates import PER_DEVICE, StepResult, aggregate_step
from fedtiny.summary import RoundSigning
from fedtiny.uncertainty import wilson


@dataclass
class BoardStats:
    """One board over the trial, as its gateway reported it."""

    key: str  # "device N", or the link URI of a board never reached
    uri: str
    device_id: int
    gateway: int
    trained: int = 0  # train messages it completed
    evaluated: int = 0
    failures: int = 0  # train or evaluate messages it failed
    errors: list[str] = field(default_factory=list)  # the first few, "round R train: ..."
    last_error: str = ""


class ProgressEvent(TypedDict):
    """A line of a trial's progress.jsonl (:meth:`FieldServer.event`; `fedtiny serve` tails it): ``waiting``
    (``connected`` of ``gateways``), ``connected`` (``gateways``), or a ``round`` done (``row``: its
    :class:`fedtiny.results.RoundRow` as ``dataclasses.asdict`` gives it; ``failures``: the boards' errors)."""

    event: str
    connected: NotRequired[int]
    gateways: NotRequired[int]
    row: NotRequired[Mapping[str, object]]
    failures: NotRequired[list[str]]


@dataclass
class FieldServer:
    scenario: Scenario
    trial_dir: Path
    head: Int8Head
    gateways: int
    timeout_s: float = 300.0  # a gateway's reply
    wait_s: float = 300.0  # all gateways connected
    rows: list[RoundRow] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    duplicates: int = 0
    stale: int = 0
    rejected: int = 0
    board_errors: list[str] = field(default_factory=list)
    boards: dict[str, BoardStats] = field(default_factory=dict)
    gateway_failures: int = 0
    signer: DeploySigner | None = None  # signs every redeployed head (serve --signing-key)
    names: dict[int, str] = field(default_factory=dict)  # device id -> the data's device id (recorded data)

    def __post_init__(self) -> None:
        self._calib = np.load(self.trial_dir / "calib_feats.npy")
        self._golden = self._calib[:4]
        self._gtest = np.load(self.trial_dir / "global_test_feats.npy")
        self._gtest_y = np.load(self.trial_dir / "global_test_labels.npy")
        base = (self.trial_dir / "base_int8.tflite").read_bytes()
        self._tail, self._per_tensor = read_tail(base), model_io(base).per_tensor  # the ops after the head
        self.strategy = DeviceStrategy.from_spec(strategy_spec(self.scenario))  # boards as its clients
        self._acks: dict[int, dict[int, int]] = {}  # node -> {device id: update id} to acknowledge
        self._round_failures: list[str] = []
        self._round_gw_failed = 0
        self._round_labels: dict[str, int] = {}  # partial labels: what this round's boards trained on
        self._boards_seen = 0
        self._signed: tuple[Int8Head, bytes] | None = None
        self._reached: list[int] = []  # device ids that answered the last evaluate message
        #: per round with --signing-key: heads signed (their security counters), verified by boards, refused
        self.security: list[RoundSigning] = []
        (self.trial_dir / "progress.jsonl").write_text("")

    def event(self, record: ProgressEvent) -> None:
        """One JSON line in progress.jsonl: `fedtiny serve` tails it for its progress bar and messages."""
        with (self.trial_dir / "progress.jsonl").open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def _wait(self, grid: Grid) -> list[int]:
        """The gateways' nodes once all of them are connected; a "waiting" event each time the count changes."""
        deadline = time.time() + self.wait_s
        seen = -1
        while True:
            nodes = list(grid.get_node_ids())
            if len(nodes) != seen:
                seen = len(nodes)
                self.event({"event": "waiting", "connected": seen, "gateways": self.gateways})
            if len(nodes) >= self.gateways or time.time() >= deadline:
                break
            time.sleep(0.5)
        if len(nodes) < self.gateways:
            raise FedTinyError(
                f"only {len(nodes)} of {self.gateways} gateways connected within {self.wait_s:.0f} s"
            )
        self.event({"event": "connected", "gateways": len(nodes)})
        return nodes

    @property
    def devices(self) -> int:
        """The trial's boards: the data's devices it replays (recorded data), else ``fleet.devices``."""
        return len(self.names) or self.scenario.fleet.devices

    def sample(self, r: int) -> list[int] | None:
        """The device ids that train in round ``r`` (None: every board, ``strategy.fraction`` = 1): the
        simulation's draw over the boards that answered the last evaluate message."""
        k = self.devices
        if max(1, int(round(self.scenario.strategy.fraction * k))) >= k:
            return None
        avail = np.zeros(k, dtype=bool)
        idx = [d - 1 for d in self._reached if 1 <= d <= k]
        avail[idx] = True
        return [
            int(i) + 1
            for i in sample_devices(self.scenario.seed, r, self.scenario.strategy.fraction, k, avail)
        ]

    def _security(self, r: int) -> RoundSigning:
        if not self.security or self.security[-1]["round"] != r:
            self.security.append(
                {
                    "round": r,
                    "heads_signed": 0,
                    "security_counters": [],
                    "verified_by_boards": 0,
                    "refused": 0,
                }
            )
        return self.security[-1]

    def _record_boards(self, kind: str, r: int, node: int, boards: list[BoardReport]) -> None:
        gw = self.nodes.index(node) + 1 if node in self.nodes else 0
        for uri, dev, err, status in ((b.uri, b.device_id, b.error, b.status) for b in boards):
            key = (self.names.get(int(dev)) or f"device {int(dev)}") if int(dev) >= 0 else str(uri)
            st = self.boards.get(key) or self.boards.setdefault(key, BoardStats(key, str(uri), int(dev), gw))
            if self.signer is not None and status in ("AUTH_FAILED", "DOWNGRADE"):
                self._security(r)["refused"] += 1  # the board refused the signed head (signature, counter)
            if err:
                st.failures += 1
                st.last_error = str(err)
                if len(st.errors) < 10:
                    st.errors.append(f"round {r} {kind}: {err}")
                self._round_failures.append(f"{key} ({kind}): {err}")
                self.board_errors.append(f"round {r} {kind}: {key}: {err}")
            elif kind == "train":
                st.trained += 1
            else:
                st.evaluated += 1

    def _send(
        self, grid: Grid, kind: str, r: int, sampled: list[int] | None = None
    ) -> list[tuple[int, dict[str, np.ndarray]]]:
        """One ``kind`` message per gateway; ``sampled``: the device ids that train (None: every board)."""
        t = train_config(self.scenario)
        signed = self._signed_head(r).tobytes() if self.signer is not None else None
        msgs = []
        for node in self.nodes:
            ins = RoundInstruction(
                round=r,
                segment=segment_of_round(self.scenario, r),
                seed=self.scenario.seed,
                train=t,
                head=self.head,
                golden=self._golden,
                acks=self._acks.pop(node, {}),
                last=kind == "evaluate" and r == self.scenario.rounds,  # the gateway stops after this one
                signed_image=signed,
                sampled=sampled,
            )
            msgs.append(Message(ins.to_record(), dst_node_id=node, message_type=kind))
        out = []
        replies = list(grid.send_and_receive(msgs, timeout=self.timeout_s))
        for node in set(self.nodes) - {reply.metadata.src_node_id for reply in replies}:
            self._gateway_failed(kind, r, node, f"no reply within {self.timeout_s:.0f} s")
        for reply in replies:
            if reply.has_error():
                self._gateway_failed(kind, r, reply.metadata.src_node_id, str(reply.error.reason))
                continue
            got = GatewayReply.from_record(reply.content)
            self._record_boards(kind, r, reply.metadata.src_node_id, got.boards)
            self._boards_seen += len(got.boards)
            if self.signer is not None and "deployed" in got.results:
                self._security(r)["verified_by_boards"] += len(got.results["deployed"])
            out.append((reply.metadata.src_node_id, got.results))
        if kind == "evaluate":
            self._reached = sorted(int(d) for _, a in out for d in a["device_ids"])
        return out

    def _signed_head(self, r: int) -> np.ndarray:
        """The current head as a signed image, signed once per distinct head (one security counter each)."""
        assert self.signer is not None
        if self._signed is None or not self._signed[0].equals(self.head):
            self._signed = (self.head, self.signer.sign_head(self.head))
            sec = self._security(r)
            sec["heads_signed"] += 1
            sec["security_counters"].append(self.signer.last_counter())
        return np.frombuffer(self._signed[1], np.uint8)

    def _gateway_failed(self, kind: str, r: int, node: int, reason: str) -> None:
        gw = self.nodes.index(node) + 1 if node in self.nodes else node
        self.gateway_failures += 1
        self._round_gw_failed += 1
        self.board_errors.append(f"round {r} {kind}: gateway {gw}: {reason}")
        self._round_failures.append(f"gateway {gw} ({kind}): {reason}")

    def end(self, grid: Grid, summary: str, wait: bool = True) -> None:
        """Tell every gateway the trial is over (`fedtiny gateway` then stops its SuperNode); ``wait``: for their
        replies (up to 60 s), else only send (a stopped trial: a gateway busy with a board reads it when done)."""
        msgs = [
            Message(TrialEnd(summary).to_record(), dst_node_id=node, message_type="query")
            for node in getattr(self, "nodes", [])
        ]
        if msgs and wait:
            list(grid.send_and_receive(msgs, timeout=60))
        elif msgs:
            list(grid.push_messages(msgs))

    def run(self, grid: Grid) -> None:
        self.nodes = self._wait(grid)
        self._evaluate(grid, 0, time.time(), float("nan"), 0, 0, 0)
        for r in range(1, self.scenario.rounds + 1):
            t0 = time.time()
            self._boards_seen = 0
            chosen = self.sample(r)
            replies = self._send(grid, "train", r, chosen)
            sampled = self._boards_seen if chosen is None else len(chosen)
            step = self.take_updates(r, replies)
            self._evaluate(grid, r, t0, step.loss, step.trained, step.rejected, sampled)

    def take_updates(self, r: int, replies: list[tuple[int, dict[str, np.ndarray]]]) -> StepResult:
        """The train replies ``(node, arrays)`` of round ``r``: every update is acknowledged, counted once by
        (device id, update id) and kept only if trained in round ``r``; then the simulation's aggregation step
        (validate, order by device, the Flower strategy, re-quantize) gives the new head."""
        parts = []
        for node, a in replies:
            acks = self._acks.setdefault(node, {})
            fresh = np.zeros(len(a["device_ids"]), dtype=bool)
            for i, (dev, uid, rnd) in enumerate(zip(a["device_ids"], a["update_ids"], a["rounds"])):
                acks[int(dev)] = int(uid)  # received: the board may forget it now
                if (int(dev), int(uid)) in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add((int(dev), int(uid)))
                if int(rnd) != r:
                    self.stale += 1
                    continue
                fresh[i] = True
            if fresh.any():
                parts.append({k: a[k][fresh] for k in ("weights", *PER_DEVICE)})
                for k in ("labels_used", "labels_late", "labels_wrong", "pseudo_used"):  # partial labels
                    if k in a:
                        self._round_labels[k] = self._round_labels.get(k, 0) + int(a[k][fresh].sum())
        step = aggregate_step(
            r,
            self.head,
            parts,
            self.strategy,
            self.scenario.strategy.max_update_norm,
            self._calib,
            self._per_tensor,
        )
        self.head = step.head
        self.rejected += step.rejected
        return step

    def _evaluate(
        self, grid: Grid, r: int, t0: float, loss: float, trained: int, rejected: int, sampled: int
    ) -> None:
        self._boards_seen = 0
        replies = self._send(grid, "evaluate", r)
        correct = sum(int(a["correct"].sum()) for _, a in replies)
        total = sum(int(a["total"].sum()) for _, a in replies)
        boards = sum(len(a["device_ids"]) for _, a in replies)
        c, d = self.head.weights.shape
        gacc = float(np.mean(predict_through(self.head, self._tail, self._gtest) == self._gtest_y))
        row = RoundRow(
            r,
            segment_of_round(self.scenario, r),
            correct / total if total else float("nan"),
            gacc,
            loss,
            trained,
            rejected,
            self._round_gw_failed,
            head_patch_bytes(self.head) * boards,
            float_update_bytes(c, d) * trained,
            round(time.time() - t0, 3),
            devices_available=self._boards_seen,
            devices_sampled=sampled,
        )
        # 95% Wilson intervals: boards' test samples (clustered per board, so this is the optimistic bound) and
        # the held-out reference set
        row.labels, self._round_labels = self._round_labels, {}
        row.accuracy_lo, row.accuracy_hi = wilson(row.accuracy, total)
        row.accuracy_global_lo, row.accuracy_global_hi = wilson(gacc, len(self._gtest_y))
        self.rows.append(row)
        self.event({"event": "round", "row": asdict(row), "failures": self._round_failures})
        self._round_failures, self._round_gw_failed = [], 0
