"""The field trial's server <-> gateway messages (fedtiny/records.py): one dataclass each, one conversion pair."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from fedtiny.clients.board.device import default_head
from fedtiny.ondevice.train import TrainConfig
from fedtiny.records import BoardReport, GatewayReply, RoundInstruction, TrialEnd


def _instruction(**kw: object) -> RoundInstruction:
    args: dict[str, object] = dict(
        round=3,
        segment=1,
        seed=7,
        train=TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, prox_mu=0.0),
        head=default_head(4, 16, seed=5),
        golden=np.arange(32, dtype=np.int8).reshape(2, 16),
    )
    args.update(kw)
    return RoundInstruction(**args)  # type: ignore[arg-type]


def test_round_instruction_round_trip() -> None:
    for ins in (_instruction(), _instruction(acks={4: 11, 9: 2}, last=True, signed_image=b"\x00\xffimage")):
        back = RoundInstruction.from_record(ins.to_record())
        assert back.head.equals(ins.head)
        np.testing.assert_array_equal(back.golden, ins.golden)
        assert back.golden.dtype == np.int8
        for name in ("round", "segment", "seed", "train"):
            assert getattr(back, name) == getattr(ins, name), name
        assert (back.train.prox_mu, back.acks, back.last, back.signed_image) == (
            ins.train.prox_mu,
            ins.acks,
            ins.last,
            ins.signed_image,
        )


def test_round_instruction_wire_layout() -> None:
    """The record layout the gateways of earlier releases read (names, -1 padding of empty ack lists)."""
    rec = _instruction().to_record()
    assert set(rec.array_records) == {"head", "golden"} and set(rec.config_records) == {"config"}
    cfg = rec.config_records["config"]
    assert cfg["ack-devices"] == [-1] and cfg["ack-updates"] == [-1] and cfg["last"] is False
    assert cfg["batch-size"] == 16 and cfg["weight-decay"] == 1e-4 and cfg["prox-mu"] == 0.0
    signed = _instruction(signed_image=b"abc").to_record()
    assert signed.array_records["signed"]["image"].numpy().tobytes() == b"abc"


def test_gateway_reply_round_trip() -> None:
    results = {"device_ids": np.array([3], np.int64), "correct": np.array([5]), "total": np.array([8])}
    boards = [BoardReport("socket://a:1", 3), BoardReport("socket://b:2", -1, "socket://b:2: refused")]
    rec = GatewayReply(results, boards).to_record()
    info = rec.config_records["info"]
    assert info["boards"] == 2 and info["errors"] == ["socket://b:2: refused"]
    back = GatewayReply.from_record(rec)
    assert back.boards == boards and back.errors == ["socket://b:2: refused"]
    assert set(back.results) == set(results)
    np.testing.assert_array_equal(back.results["total"], results["total"])


def test_gateway_reply_without_boards() -> None:
    rec = GatewayReply({"device_ids": np.zeros(0, np.int64)}).to_record()
    info = rec.config_records["info"]
    assert info["board-uris"] == [""] and info["board-ids"] == [-2] and info["boards"] == 0  # padded lists
    back = GatewayReply.from_record(rec)
    assert back.boards == [] and len(back.results["device_ids"]) == 0


def test_trial_end() -> None:
    assert TrialEnd.from_record(TrialEnd("3 rounds").to_record()) == TrialEnd("3 rounds")
    assert TrialEnd.from_record(_instruction().to_record()) is None  # a config record, but not an end
    assert TrialEnd.from_record(RecordDict()) is None


def test_the_simulated_gateways_instruction_round_trips_through_flowers_config_record() -> None:
    from fedtiny.ondevice.train import TrainConfig
    from fedtiny.records import GatewayInstruction

    ins = GatewayInstruction(
        round=7,
        segment=1,
        seed=2**31 + 5,
        fleet_dir="/tmp/a dir/fleet",
        train=TrainConfig(2, 16, 0.05, 0.9, 1e-4, 0.01),
        uplink="int8",
        reduce=True,
        max_norm=10.0,
        clip_norm=2.5,
    )
    rec = ins.to_config()
    assert rec["fleet-dir"] == "/tmp/a dir/fleet" and rec["reduce"] == 1  # the wire keys stay kebab-case
    assert GatewayInstruction.from_config(rec) == ins
    bad = dict(rec)
    bad["lr"] = "fast"
    with pytest.raises(ValueError, match="'lr'"):
        GatewayInstruction.from_config(bad)


def test_a_boards_refusal_travels_as_its_status_name_not_as_text() -> None:
    """The field server counts refused signed heads by the board's status (AUTH_FAILED, DOWNGRADE) as data."""
    from fedtiny.records import BoardReport, GatewayReply

    reply = GatewayReply(
        {},
        [
            BoardReport("socket://a", 1, "socket://a: VERIFY: AUTH_FAILED: bad signature", "AUTH_FAILED"),
            BoardReport("socket://b", 2),
        ],
    )
    back = GatewayReply.from_record(reply.to_record())
    assert [b.status for b in back.boards] == ["AUTH_FAILED", ""]
    assert back.boards[0].error.endswith("bad signature")
