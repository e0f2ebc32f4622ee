"""Partial labels, late labels (LABEL) and pseudo-labels on the virtual board, over a real TCP link
(docs/protocol.md PUSH_SAMPLES "Sample ids", TrainRequest PSEUDO, EVALUATE, LabelRequest; docs/ondevice.md §5a)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from board_helpers import served_board

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError
from fedtiny.link.messages import (
    TRAIN_FIXED,
    TRAIN_PSEUDO,
    UNLABELLED,
    Cap,
    LabelRequest,
    MsgType,
    Samples,
    TrainRequest,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import (
    FeatureCache,
    Int8Head,
    TrainConfig,
    TrainJob,
    dequantize_head,
    head_forward_int8,
    train_heads,
    train_heads_fixed,
)
from fedtiny.ondevice.evaluate import evaluate_head
from fedtiny.ondevice.pseudo import training_set

KEY = bytes(range(32))
DEVICE = 11
C, D, CAP = 4, 8, 8
HEAD = default_head(C, D, seed=5)
RNG = np.random.default_rng(22)


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardSession]:
    """One virtual board on a loopback TCP socket and one host session on it, for the whole module."""
    cfg = BoardConfig(cache_capacity=CAP)
    flash = tmp_path_factory.mktemp("labels") / "b.flash"
    with served_board(flash, DEVICE, KEY, head=HEAD, cfg=cfg) as uri:
        s = BoardSession(open_transport(uri), timeout=2.0, key=KEY, seed=1)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def sess(link: BoardSession) -> BoardSession:
    """The session on a freshly reset board: empty cache, no pending update, sample ids from 0."""
    link.reset()
    link.hello()
    return link


def feats(n: int) -> np.ndarray:
    return RNG.integers(-128, 128, (n, D)).astype(np.int8)


def status_of(fn: Callable[..., object], *args: Any, **kw: Any) -> tuple[str, str]:
    with pytest.raises(DeviceError) as e:
        fn(*args, **kw)
    return e.value.status_name, e.value.detail


def ref_eval(head: Int8Head, x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """EVALUATE per the doc: the labelled slots only (y >= 0), n = 0 answers 0, 0."""
    k = y >= 0
    if not k.any():
        return 0, 0.0, 0.0
    acc, loss = evaluate_head(head, x[k], y[k])
    return int(k.sum()), float(np.float32(acc)), float(np.float32(loss))  # as the f32 fields carry them


def test_hello_unlabelled_push_ids_and_evaluate(sess: BoardSession) -> None:
    assert sess.info is not None and sess.info.capabilities & Cap.LABELS
    x = feats(5)
    y = np.array([1, -1, 2, UNLABELLED, 0])
    r = sess.push_samples_ids(x, y, clear=True)
    assert (r.cached, r.pushed_total, r.ids.tolist()) == (5, 5, [0, 1, 2, 3, 4])
    ev = sess.evaluate()
    yl = np.where(y == UNLABELLED, -1, y)
    assert (ev.n, ev.accuracy, ev.loss) == ref_eval(HEAD, x, yl)
    # max_samples counts slots, labelled or not: slots 0..1 hold one labelled sample
    ev2 = sess.evaluate(2)
    assert (ev2.n, ev2.accuracy, ev2.loss) == ref_eval(HEAD, x[:2], yl[:2])
    # an unlabelled-only push (labels None), numbered after the first; the old signature still answers the count
    r2 = sess.push_samples_ids(feats(2))
    assert (r2.cached, r2.pushed_total, r2.ids.tolist()) == (7, 7, [5, 6])
    assert sess.push_samples(feats(1), np.array([-1])) == 8
    # every slot unlabelled: n = 0 answers OK with 0, 0; an empty cache stays CACHE_EMPTY
    sess.push_samples_ids(feats(3), None, clear=True)
    ev3 = sess.evaluate()
    assert (ev3.n, ev3.accuracy, ev3.loss) == (0, 0.0, 0.0)
    sess.push_samples(feats(0), np.zeros(0), clear=True)
    assert status_of(sess.evaluate)[0] == "CACHE_EMPTY"
    # a label that is neither a class nor 0xFFFF: MALFORMED, nothing cached, CLEAR not applied
    bad = Samples(0, 1, np.array([1, 0xFFFE]), feats(2)).encode()
    assert status_of(sess.request, MsgType.PUSH_SAMPLES, bad)[0] == "MALFORMED"
    assert sess.push_samples_ids(feats(1), [0]).ids.tolist() == [11]


def test_label_by_id(sess: BoardSession) -> None:
    x = feats(6)
    r = sess.push_samples_ids(x, None, clear=True)
    assert r.ids.tolist() == list(range(6))
    slots_x = np.zeros((CAP, D), np.int8)
    slots_y = np.full(CAP, -1)
    slots_x[:6] = x
    res = sess.label([0, 3], [1, 2])
    assert (res.applied, res.labelled) == (2, 2)
    slots_y[[0, 3]] = [1, 2]
    # 5 more: ids 6..10 fill slots 6, 7, 0, 1, 2 (ids 0, 1, 2 overwritten)
    x2 = feats(5)
    r2 = sess.push_samples_ids(x2, [3, -1, -1, -1, 0])
    assert (r2.cached, r2.ids.tolist()) == (8, [6, 7, 8, 9, 10])
    slots_x[[6, 7, 0, 1, 2]] = x2
    slots_y[[6, 7, 0, 1, 2]] = [3, -1, -1, -1, 0]
    # evicted ids (0, 2), never pushed (11, 99999, 2^32 - 1) are skipped; 3 and 8 are applied
    res = sess.label([0, 2, 3, 8, 11, 99999, 0xFFFFFFFF], [1, 1, 3, 2, 0, 0, 0])
    slots_y[3], slots_y[0] = 3, 2
    assert (res.applied, res.labelled) == (2, int((slots_y >= 0).sum()))
    # repeated ids: applied in order, the later wins (each counts as applied)
    res = sess.label([4, 4, 4], [1, 0, 2])
    slots_y[4] = 2
    assert (res.applied, res.labelled) == (3, int((slots_y >= 0).sum()))
    # take-back: 0xFFFF (or -1 on the host) removes a label
    res = sess.label([10, 6], [UNLABELLED, -1])
    slots_y[[2, 6]] = -1
    assert (res.applied, res.labelled) == (2, int((slots_y >= 0).sum()))
    # a later label then a take-back of the same id in one request: the take-back wins
    assert sess.label([9, 9], [1, UNLABELLED]).applied == 2
    ev = sess.evaluate()
    assert (ev.n, ev.accuracy, ev.loss) == ref_eval(HEAD, slots_x, slots_y)
    # a refused request (a label >= C) changes nothing, not even its valid first entry
    bad = LabelRequest(np.array([7, 8]), np.array([1, C])).encode()
    assert status_of(sess.request, MsgType.LABEL, bad)[0] == "MALFORMED"
    assert sess.label([], []).labelled == int((slots_y >= 0).sum())  # n = 0: just the count
    ev = sess.evaluate()
    assert (ev.n, ev.accuracy, ev.loss) == ref_eval(HEAD, slots_x, slots_y)
    # after CLEAR the old ids are gone; the new ones (continuing from pushed_total) start at slot 0
    x3 = feats(2)
    r3 = sess.push_samples_ids(x3, None, clear=True)
    assert r3.ids.tolist() == [11, 12]
    res = sess.label([10, 9, 3, 12], [0, 0, 0, 1])
    assert (res.applied, res.labelled) == (1, 1)
    ev = sess.evaluate()
    assert (ev.n, ev.accuracy, ev.loss) == ref_eval(HEAD, x3, np.array([-1, 1]))
    # a reset empties the cache and restarts the ids at 0: nothing left to label
    sess.reset()
    sess.hello()
    assert sess.label([0, 11, 12], [1, 1, 1]).applied == 0
    assert sess.push_samples_ids(feats(1)).ids.tolist() == [0]


def test_label_malformed(sess: BoardSession) -> None:
    sess.push_samples(feats(2), [1, -1], clear=True)
    for payload in (
        b"",
        b"\x01",
        struct.pack("<H", 2) + struct.pack("<IH", 0, 1),  # n = 2, one entry
        struct.pack("<H", 1) + struct.pack("<IH", 1, 1) + b"\x00",  # a trailing byte
        struct.pack("<H", 1) + struct.pack("<IH", 1, C),  # label = C
        struct.pack("<H", 1) + struct.pack("<IH", 1, 0xFFFE),
    ):
        assert status_of(sess.request, MsgType.LABEL, payload)[0] == "MALFORMED", payload.hex()
    assert sess.label([], []).labelled == 1


def _train(flags: int = TRAIN_PSEUDO, margin: float = 0.0, weight: float = 0.5, **kw: float) -> TrainRequest:
    args = {"epochs": 1, "batch_size": 4, "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "prox_mu": 0.0}
    args.update(kw)
    return TrainRequest(
        int(args["epochs"]),
        int(args["batch_size"]),
        args["lr"],
        args["momentum"],
        args["weight_decay"],
        args["prox_mu"],
        3,
        1,
        flags,
        margin,
        weight,
    )


def _pair(margin: float, weight: float) -> bytes:
    return struct.pack("<ff", margin, weight)


def test_train_pseudo_checks_in_order(sess: BoardSession) -> None:
    nan, inf = float("nan"), float("inf")
    plain = _train(flags=0).encode()
    # the empty cache answers before the field values (CACHE_EMPTY), the length before everything
    assert status_of(sess.request, MsgType.TRAIN, _train(weight=0.0).encode())[0] == "CACHE_EMPTY"
    assert status_of(sess.request, MsgType.TRAIN, plain + _pair(1, 0.5))[0] == "MALFORMED"
    sess.push_samples(feats(4), [0, 1, -1, -1], clear=True)
    malformed = [
        _train().encode()[:32],  # PSEUDO in a 32-byte request
        _train().encode()[:36],
        _train().encode() + b"\x00",
        plain + _pair(1, 0.5),  # 40 bytes without PSEUDO
        _train(flags=TRAIN_FIXED).encode() + _pair(1, 0.5),
        _train(weight=0.0).encode(),
        _train(weight=-0.5).encode(),
        _train(weight=1.5).encode(),
        _train(weight=float(np.nextafter(np.float32(1), np.float32(2)))).encode(),
        _train(weight=nan).encode(),
        _train(weight=inf).encode(),
        _train(margin=nan).encode(),
        _train(margin=inf).encode(),
        _train(margin=-inf).encode(),
        _train(weight=0.0, flags=TRAIN_PSEUDO | 0x10).encode(),  # field values before the flags
    ]
    for p in malformed:
        assert status_of(sess.request, MsgType.TRAIN, p)[0] == "MALFORMED", p.hex()
    assert (
        status_of(sess.request, MsgType.TRAIN, _train(flags=TRAIN_PSEUDO | 0x10).encode())[0] == "UNSUPPORTED"
    )
    with pytest.raises(DeviceError, match="NO_UPDATE"):
        sess.read_update()  # nothing was trained
    # weight 1 and a negative margin (every unlabelled slot) are in range
    res = sess.train(_train(flags=0), pseudo_margin=-1e30, pseudo_weight=1.0)
    assert res.num_examples == 4
    # a pending update answers before the field values, after the length
    assert status_of(sess.request, MsgType.TRAIN, _train(weight=0.0).encode())[0] == "UPDATE_PENDING"
    assert status_of(sess.request, MsgType.TRAIN, _train().encode()[:32])[0] == "MALFORMED"
    sess.ack_update(res.update_id)


def test_no_labelled_sample(sess: BoardSession) -> None:
    sess.push_samples(feats(6), None, clear=True)
    for req in (
        _train(flags=0),
        _train(flags=TRAIN_FIXED),
        _train(margin=1e30),
        _train(flags=TRAIN_PSEUDO | 1, margin=1e30),
    ):
        assert status_of(sess.train, req) == ("CACHE_EMPTY", "no labelled sample")
    with pytest.raises(DeviceError, match="NO_UPDATE"):
        sess.read_update()
    # the work bound counts the cached samples, labelled or not, and comes first
    assert status_of(sess.train, _train(epochs=65536 // 6 + 1))[0] == "MALFORMED"
    sess.label([0], [2])
    assert sess.train(_train(flags=0)).num_examples == 1


def _slots(pushes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    """The board's cache slots (features, labels -1 for none, count) after these pushes, as FeatureCache keeps
    them (the reference's own ring buffer)."""
    cache = FeatureCache(1, CAP, D)
    for x, y in pushes:
        cache.push(x[None], np.where(np.asarray(y) == UNLABELLED, -1, y)[None])
    return cache.features[0], cache.labels[0].astype(np.int64), int(cache.count[0])


def test_ids_after_a_switch_that_empties_the_cache() -> None:
    """A switch to or from a full image empties the cache without CLEAR (section 5): the ids go on from
    pushed_total, the cache restarts at slot 0, and the base of the ids moves with it."""
    vb = VirtualBoard(BoardConfig(cache_capacity=CAP, fleet_key=KEY), None, factory_head=HEAD)
    s = BoardSession(InProcessTransport(vb), key=KEY, seed=2)
    s.hello()
    assert s.push_samples_ids(feats(3)).ids.tolist() == [0, 1, 2]
    vb.clear_ram()  # what ACTIVATE / ROLLBACK to or from a full image does
    x = feats(2)
    r = s.push_samples_ids(x, [-1, 1])
    assert (r.cached, r.pushed_total, r.ids.tolist()) == (2, 5, [3, 4])
    res = s.label([0, 2, 3], [1, 1, 2])
    assert (res.applied, res.labelled) == (1, 2)
    ev = s.evaluate()
    assert (ev.n, ev.accuracy, ev.loss) == ref_eval(HEAD, x, np.array([2, 1]))


@pytest.mark.parametrize("fixed", [False, True])
def test_train_pseudo_bit_exact(sess: BoardSession, fixed: bool) -> None:
    # 11 samples through a ring of 8: slot order differs from push order; 3 labelled, 1 labelled late
    x1, y1 = feats(6), np.array([2, -1, -1, 1, -1, -1])
    x2, y2 = feats(5), np.array([-1, -1, 0, -1, -1])
    r1 = sess.push_samples_ids(x1, y1, clear=True)
    r2 = sess.push_samples_ids(x2, y2)
    sess.label([r2.ids[0], r1.ids[0]], [3, 1])  # id 6 (slot 6) labelled 3; id 0 overwritten: skipped
    y2 = y2.copy()
    y2[0] = 3
    fx, fy, count = _slots([(x1, y1), (x2, y2)])
    fh = dequantize_head(HEAD)
    q = np.sort(head_forward_int8(HEAD, fx).astype(np.int32), axis=1)
    m = (q[:, -1] - q[:, -2]).astype(np.float32) * np.float32(HEAD.output_scale)
    unl = np.flatnonzero(fy < 0)
    margin = float(np.float32(np.median(m[unl])))  # some unlabelled slots confident, some not
    weight = float(np.float32(0.3))
    ts = training_set(HEAD, fx, fy, count, margin, weight)
    assert 0 < ts.pseudo.sum() < len(unl)
    lr = float(np.float32(0.05))
    kw: dict[str, float] = {"epochs": 3, "batch_size": 3, "lr": lr}
    if not fixed:
        kw.update(momentum=float(np.float32(0.5)), prox_mu=float(np.float32(0.01)))
    req = _train(flags=TRAIN_FIXED if fixed else 0, **kw)
    res = sess.train(req, pseudo_margin=margin, pseudo_weight=weight)
    upd = sess.read_update()
    job = TrainJob(
        TrainConfig(req.epochs, req.batch_size, req.lr, req.momentum, req.weight_decay, req.prox_mu),
        input_scale=HEAD.input_scale,
        input_zero_point=HEAD.input_zero_point,
        seed=req.seed,
        round_=req.round,
        device_ids=np.array([DEVICE]),
        sample_weights=ts.weights[None],
    )
    trainer = train_heads_fixed if fixed else train_heads
    ref = trainer(fh.weights, fh.bias, fx[ts.slots][None], ts.labels[None], np.array([len(ts.slots)]), job)
    assert res.num_examples == upd.num_examples == len(ts.slots)
    assert np.float32(res.loss).tobytes() == ref.loss[0].tobytes() == np.float32(upd.loss).tobytes()
    assert upd.weights.tobytes() == ref.weights[0].tobytes()
    assert upd.bias.tobytes() == ref.bias[0].tobytes()
    sess.ack_update(upd.update_id)
    # the pseudo weight matters: weight 1 trains other bits; without PSEUDO only the labelled slots train
    res1 = sess.train(req, pseudo_margin=margin, pseudo_weight=1.0)
    upd1 = sess.read_update()
    assert upd1.weights.tobytes() != upd.weights.tobytes()
    sess.ack_update(res1.update_id)
    res0 = sess.train(req)
    assert res0.num_examples == int((fy[:count] >= 0).sum()) == 3
    sess.ack_update(res0.update_id)
