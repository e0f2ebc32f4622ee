"""Field trials with the labels of docs/labels.md: the gateway replays partial and late labels to a real
(virtual) board over a socket, late ones in LABEL messages, and the board pseudo-labels the rest itself."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from test_gateway_boards import KEY, _write_replay, start_board  # noqa: F401  (the fixture)

from fedtiny.clients.board.device import BoardConfig, default_head
from fedtiny.clients.gateway.boards import GatewayBoards, Replay
from fedtiny.config.schema import LabelsSection
from fedtiny.fleet.data import LABELS_FILE
from fedtiny.link.messages import TrainRequest
from fedtiny.ondevice import TrainConfig, TrainJob, dequantize_head, train_heads
from fedtiny.ondevice.pseudo import pseudo_threshold, training_set


def _labels(root: Path, **kw: object) -> None:
    doc = {"labels": asdict(LabelsSection(**kw)), "seed": 3, "segment_starts": [0]}  # type: ignore[arg-type]
    (root / LABELS_FILE).write_text(json.dumps(doc))


def test_late_labels_reach_the_board_in_label_messages_and_it_trains_on_them(
    tmp_path: Path,
    start_board,  # noqa: F811  (the fixture imported above)
) -> None:
    head = default_head(4, 16, seed=5)
    rng = np.random.default_rng(2)
    feats = rng.integers(-128, 128, (24, 16)).astype(np.int8)
    y = rng.integers(0, 4, 24).astype(np.int16)
    replay = _write_replay(tmp_path / "replay", 1, feats, y, n_test=8)
    _labels(replay, fraction=0.5, delay_rounds=2)
    uri = start_board(1, head, BoardConfig(cache_capacity=32))
    gw = GatewayBoards([uri], KEY, Replay(replay))
    golden = np.zeros((1, 16), np.int8)
    sched = Replay(replay).schedule(4)
    assert sched is not None
    # round 1: no label has arrived yet (collected in round 0, two rounds late): nothing to train on, no error
    out = gw.train(head, golden, TrainRequest(1, 4, 0.1, 0.0, 0.0, 0.0, 9, 1), 0, acks={})
    assert out[0].error == "" and not out[0].update
    # round 2: the labels arrive, in LABEL messages; the board trains on exactly those samples
    out = gw.train(head, golden, TrainRequest(1, 4, 0.1, 0.0, 0.0, 0.0, 9, 2), 0, acks={})
    given = Replay(replay).given(1, 0, 2, y, sched)
    assert out[0].error == "" and 0 < (given >= 0).sum() < 24
    assert out[0].update["labels_used"] == int((given >= 0).sum()) == out[0].update["num_examples"]
    assert out[0].update["labels_late"] == out[0].update["labels_used"] and out[0].update["pseudo_used"] == 0
    ts = training_set(head, feats, given, 24)
    fh = dequantize_head(head)
    ref = train_heads(
        fh.weights,
        fh.bias,
        feats[ts.slots][None],
        ts.labels[None],
        np.array([len(ts.slots)]),
        TrainJob(
            TrainConfig(1, 4, 0.1),
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=9,
            round_=2,
            device_ids=np.array([1]),
        ),
    )
    np.testing.assert_array_equal(out[0].update["weights"], ref.weights[0])


def test_boards_pseudo_label_the_rest_with_the_trials_threshold(
    tmp_path: Path,
    start_board,  # noqa: F811  (the fixture imported above)
) -> None:
    head = default_head(4, 16, seed=5)
    rng = np.random.default_rng(4)
    feats = rng.integers(-128, 128, (24, 16)).astype(np.int8)
    y = rng.integers(0, 4, 24).astype(np.int16)
    replay = _write_replay(tmp_path / "replay", 1, feats, y, n_test=8)
    _labels(replay, fraction=0.25, pseudo=0.3, pseudo_weight=0.5)
    uri = start_board(1, head, BoardConfig(cache_capacity=32))
    out = GatewayBoards([uri], KEY, Replay(replay)).train(
        head, np.zeros((1, 16), np.int8), TrainRequest(1, 4, 0.1, 0.0, 0.0, 0.0, 9, 1), 0, acks={}
    )
    sched = Replay(replay).schedule(4)
    assert sched is not None
    given = Replay(replay).given(1, 0, 1, y, sched)
    ts = training_set(head, feats, given, 24, pseudo_threshold(0.3, 4), 0.5)
    assert ts.pseudo.any()
    assert out[0].error == "" and out[0].update["num_examples"] == len(ts.slots)
    assert out[0].update["pseudo_used"] == int(ts.pseudo.sum())
