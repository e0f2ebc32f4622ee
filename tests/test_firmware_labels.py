"""Partial labels, late labels and pseudo-labels on the C firmware (issue 22; docs/ondevice.md section 5a,
docs/protocol.md PUSH_SAMPLES "Sample ids", LABEL, TrainRequest flag PSEUDO, EVALUATE).

The host build of the firmware is driven through BoardSession: samples pushed with and without labels, the cache
wrapped, labels given late by sample id (some for overwritten samples, some taken back), then TRAIN with PSEUDO in
float32 and in fixed point. The update must be, bit for bit, the Python reference's: the training set of
``fedtiny.ondevice.pseudo.training_set`` on the running int8 head, trained by ``train_heads`` /
``train_heads_fixed`` with the pseudo-labelled samples weighted (``TrainJob.sample_weights``); EVALUATE must be
``evaluate_head`` on the labelled slots. Where the virtual board already has the LABELS capability the same
requests go to it too and both boards must agree. Whatever a peer sends as LABEL, the board answers and lives on.
The golden vectors (firmware/tests/golden/golden_labels.h, the C unit tests, QEMU included) cover random heads.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import test_firmware as tf
from numpy.typing import ArrayLike

from fedtiny.clients.board.device import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError
from fedtiny.link.blobs import UpdateBlob
from fedtiny.link.messages import (
    TRAIN_FIXED,
    TRAIN_PSEUDO,
    UNLABELLED,
    Cap,
    EvalResult,
    LabelRequest,
    LabelResult,
    MsgType,
    Status,
    TrainRequest,
)
from fedtiny.link.messages import TrainResult as WireTrainResult
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
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
from fedtiny.ondevice.pseudo import TrainingSet, training_set
from fedtiny.ondevice.train import TrainResult

CAPACITY = 200  # FT_CACHE_CAPACITY of the default build
Entries = tuple[np.ndarray, np.ndarray]  # LABEL entries: sample ids, labels
DEVICE = 17


@pytest.fixture(scope="module")
def host_fw() -> Path:
    tf.make("build/host/fedtiny-fw")
    return tf.BUILD / "host" / "fedtiny-fw"


def label(s: BoardSession, ids: ArrayLike, labels: ArrayLike) -> LabelResult:
    """One LABEL request as it is (BoardSession.label splits and checks; here the board must see these bytes)."""
    req = LabelRequest(np.asarray(ids, np.int64), np.asarray(labels, np.int64))
    return LabelResult.decode(s.request(MsgType.LABEL, req.encode()))


def scenario(seed: int = 3, pushed: int = 260) -> tuple[np.ndarray, np.ndarray, Entries, np.ndarray]:
    """Samples (the ring wraps), 40 % pushed without a label, and late LABEL entries: some for overwritten ids,
    some taking a label back, one id twice (the later wins). Returns x, pushed labels, entries, final labels."""
    rng = np.random.default_rng(seed)
    x, y = tf.samples(seed, pushed)
    pushed_y = np.where(rng.random(pushed) < 0.4, UNLABELLED, y).astype(np.int64)
    ids = np.concatenate([rng.integers(0, pushed, 40), [pushed - 1, pushed - 1, 5, pushed + 3]])
    new = np.where(rng.random(len(ids)) < 0.25, UNLABELLED, rng.integers(0, 10, len(ids)))
    final = pushed_y.copy()
    for i, v in zip(ids, new):
        if pushed - CAPACITY <= i < pushed:  # still cached
            final[i] = v
    return x, pushed_y, (ids, new), final


def reference_cache(x: np.ndarray, labels: np.ndarray) -> FeatureCache:
    cache = FeatureCache(1, CAPACITY, x.shape[1])
    cache.push(x[None], np.where(labels == UNLABELLED, -1, labels)[None])
    return cache


def margin_for(head: Int8Head, cache: FeatureCache) -> float:
    """A threshold that about half of the unlabelled slots reach (one of their own margins: >= includes it)."""
    n = int(cache.count[0])
    miss = np.flatnonzero(cache.labels[0, :n] < 0)
    q = np.sort(head_forward_int8(head, cache.features[0, miss]).astype(np.int32), axis=1)
    m = (q[:, -1] - q[:, -2]).astype(np.float32) * np.float32(head.output_scale)
    return float(np.sort(m)[len(m) // 2])


def reference_update(
    head: Int8Head, cache: FeatureCache, req: TrainRequest
) -> tuple[TrainingSet, TrainResult]:
    """What the spec trains: the training set (docs/ondevice.md 5a) renumbered 0 .. n-1, pseudo-labelled
    samples weighted, float32 or fixed point as the request says."""
    margin = float(np.float32(req.pseudo_margin)) if req.pseudo else None
    weight = float(np.float32(req.pseudo_weight))
    ts = training_set(head, cache.features[0], cache.labels[0], int(cache.count[0]), margin, weight)
    n = len(ts.slots)
    fh = dequantize_head(head)
    job = TrainJob(
        TrainConfig(req.epochs, req.batch_size, req.lr, req.momentum, req.weight_decay, req.prox_mu),
        input_scale=head.input_scale,
        input_zero_point=head.input_zero_point,
        seed=req.seed,
        round_=req.round,
        device_ids=np.array([DEVICE]),
        sample_weights=ts.weights[None] if req.pseudo else None,
    )
    trainer = train_heads_fixed if req.fixed else train_heads
    feats, labels = cache.features[0, ts.slots][None], ts.labels[None]
    return ts, trainer(fh.weights, fh.bias, feats, labels, np.array([n]), job)


def same_bits(a: ArrayLike, b: ArrayLike) -> bool:
    return tf.same_bits(a, b)


def spread_head() -> Int8Head:
    """The factory head with an output scale that spans its logits on these samples (its own saturates at 127:
    every margin 0), set with SET_HEAD: margins, pseudo-labels and their selection all vary."""
    return default_head().with_(output_scale=float(np.float32(0.65)), output_zero_point=-64)


def run_on(
    s: BoardSession,
    x: np.ndarray,
    pushed_y: np.ndarray,
    entries: Entries,
    head: Int8Head,
    reqs: list[TrainRequest],
) -> tuple[LabelResult, EvalResult, list[tuple[WireTrainResult, UpdateBlob]]]:
    """The whole sequence on one board: SET_HEAD, pushes, LABEL, EVALUATE, one TRAIN per request (acknowledged)."""
    s.set_head(head)
    assert s.push_samples(x[:100], pushed_y[:100], clear=True) == 100
    s.push_samples(x[100:], pushed_y[100:])
    lr = label(s, *entries)
    ev = s.evaluate()
    out = []
    for req in reqs:
        tr = s.train(req)
        upd = s.read_update()
        s.ack_update(upd.update_id)
        out.append((tr, upd))
    return lr, ev, out


def test_partial_late_and_pseudo_labels_match_the_reference(host_fw: Path, tmp_path: Path) -> None:
    x, pushed_y, entries, final = scenario()
    head = spread_head()
    cache = reference_cache(x, final)
    t = margin_for(head, cache)
    f32 = float(np.float32(0.05))
    reqs = [
        TrainRequest(2, 16, 0.02, 0.5, 1e-4, 0.01, 7, 11),  # labelled slots only
        TrainRequest(2, 16, 0.02, 0.5, 1e-4, 0.01, 7, 12, TRAIN_PSEUDO, t, 0.5),
        TrainRequest(2, 8, f32, 0.0, 0.0, 0.0, 9, 13, TRAIN_FIXED | TRAIN_PSEUDO, t, 0.3),
        TrainRequest(1, 8, f32, 0.0, 0.0, 0.0, 9, 14, TRAIN_FIXED),
        TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 9, 15, TRAIN_PSEUDO, -1.0, 1.0),  # every slot kept
    ]
    board = tf.HostBoard(tmp_path / "flash.bin", "--device-id", str(DEVICE)).start()
    try:
        s = board.session()
        assert s.info is not None and s.info.capabilities & Cap.LABELS
        lr, ev, out = run_on(s, x, pushed_y, entries, head, reqs)
        labelled = cache.labels[0] >= 0
        ids = entries[0]
        assert lr.applied == int(np.count_nonzero((ids >= len(x) - CAPACITY) & (ids < len(x))))
        assert lr.labelled == int(np.count_nonzero(labelled))
        acc, loss = evaluate_head(head, cache.features[0, labelled], cache.labels[0, labelled])
        assert ev.n == int(np.count_nonzero(labelled))
        assert same_bits([ev.accuracy, ev.loss], [acc, loss])
        kept = []
        for req, (tr, upd) in zip(reqs, out):
            ts, ref = reference_update(head, cache, req)
            kept.append(len(ts.slots))
            assert tr.num_examples == upd.num_examples == len(ts.slots)
            assert same_bits(upd.weights, ref.weights[0]), req
            assert same_bits(upd.bias, ref.bias[0]), req
            assert same_bits([tr.loss, upd.loss], [ref.loss[0], ref.loss[0]]), req
        # the pseudo-labels took part: more slots than the labelled ones, fewer than all (a margin in between)
        assert kept[0] < kept[1] < kept[4] == CAPACITY
        s.close()
    finally:
        board.stop()


def test_c_board_and_virtual_board_agree_on_labels(host_fw: Path, tmp_path: Path) -> None:
    """The same sequence on the C board and the virtual board: the same answers and the same update bits."""
    vb = VirtualBoard(BoardConfig(device_id=DEVICE, fleet_key=tf.KEY, cache_capacity=CAPACITY))
    sv = BoardSession(InProcessTransport(vb), key=tf.KEY, seed=1)
    info = sv.hello()
    assert info.capabilities & Cap.LABELS
    x, pushed_y, entries, final = scenario(seed=8)
    head = spread_head()
    t = margin_for(head, reference_cache(x, final))
    reqs = [
        TrainRequest(2, 16, 0.02, 0.5, 0.0, 0.01, 7, 21, TRAIN_PSEUDO, t, 0.5),
        TrainRequest(
            2, 8, float(np.float32(0.05)), 0.0, 0.0, 0.0, 9, 22, TRAIN_FIXED | TRAIN_PSEUDO, t, 0.25
        ),
    ]
    board = tf.HostBoard(tmp_path / "flash.bin", "--device-id", str(DEVICE)).start()
    try:
        sc = board.session()
        rc, rv = run_on(sc, x, pushed_y, entries, head, reqs), run_on(sv, x, pushed_y, entries, head, reqs)
        assert (rc[0], rc[1].n) == (rv[0], rv[1].n)
        assert same_bits([rc[1].accuracy, rc[1].loss], [rv[1].accuracy, rv[1].loss])
        for (tc, uc), (tv, uv) in zip(rc[2], rv[2]):
            assert tc.num_examples == tv.num_examples
            assert same_bits(uc.weights, uv.weights) and same_bits(uc.bias, uv.bias)
            assert same_bits([tc.loss, uc.loss], [tv.loss, uv.loss])
        sc.close()
    finally:
        board.stop()


def _status(s: BoardSession, mtype: int, payload: bytes) -> str:
    return _answer(s, mtype, payload)[0]


def test_the_board_survives_any_label_request(host_fw: Path, tmp_path: Path) -> None:
    """LABEL with a count far above its entries, every wrong length, ids out of range, labels >= C and 0xFFFF,
    random bytes; TRAIN and PUSH_SAMPLES with the new fields wrong: answered, nothing changed by a refusal, the
    board alive after each."""
    rng = np.random.default_rng(5)
    board = tf.HostBoard(tmp_path / "flash.bin", "--device-id", str(DEVICE)).start()
    try:
        s = board.session()
        x, y = tf.samples(4, 30)
        y = np.where(np.arange(30) % 3 == 0, UNLABELLED, y)
        s.push_samples(x, y, clear=True)
        before = label(s, [], [])
        assert (before.applied, before.labelled) == (0, 20)
        assert _status(s, MsgType.LABEL, b"") == "MALFORMED"
        assert _status(s, MsgType.LABEL, b"\x05") == "MALFORMED"
        assert _status(s, MsgType.LABEL, struct.pack("<H", 65535) + bytes(12)) == "MALFORMED"
        assert _status(s, MsgType.LABEL, struct.pack("<HIH", 1, 0, 1) + b"\x00") == "MALFORMED"
        for bad in (10, 0xFFFE, 0x8000):
            assert _status(s, MsgType.LABEL, struct.pack("<HIHIH", 2, 0, 1, 1, bad)) == "MALFORMED"
        assert label(s, [], []).labelled == 20  # nothing applied by the refusals
        r = label(s, [2**32 - 1, 30, 10**6, 0, 1], [1, 1, 1, UNLABELLED, 0xFFFF])
        assert (r.applied, r.labelled) == (2, 19)
        for _ in range(200):
            n = int(rng.integers(0, 60))
            body = rng.integers(0, 256, int(rng.integers(0, 8 + 6 * n)), dtype=np.uint8).tobytes()
            assert _status(s, MsgType.LABEL, struct.pack("<H", n) + body) in ("OK", "MALFORMED")
        # TRAIN: 40 bytes only with PSEUDO, the pseudo fields in range
        base = TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 1, 1)
        head = base.encode()
        pseudo = struct.pack("<I", TRAIN_PSEUDO)
        assert _status(s, MsgType.TRAIN, head + struct.pack("<ff", 0.0, 1.0)) == "MALFORMED"
        assert _status(s, MsgType.TRAIN, head[:28] + pseudo) == "MALFORMED"
        for m, w in ((float("inf"), 1.0), (float("nan"), 1.0), (0.0, 0.0), (0.0, 1.5), (0.0, float("nan"))):
            assert _status(s, MsgType.TRAIN, head[:28] + pseudo + struct.pack("<ff", m, w)) == "MALFORMED"
        assert (
            _status(s, MsgType.TRAIN, head[:28] + pseudo + struct.pack("<ff", 1e30, 1.0)) == "OK"
        )  # labelled
        assert s.hello().cache_count == 30
    finally:
        board.stop()


def test_nothing_labelled_is_cache_empty_and_evaluates_to_zero(host_fw: Path, tmp_path: Path) -> None:
    board = tf.HostBoard(tmp_path / "flash.bin", "--device-id", str(DEVICE)).start()
    try:
        s = board.session()
        x, _ = tf.samples(6, 12)
        s.push_samples(x, np.full(12, UNLABELLED), clear=True)
        with pytest.raises(DeviceError, match="CACHE_EMPTY: no labelled sample"):
            s.train(TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 1, 1))
        with pytest.raises(DeviceError, match="CACHE_EMPTY: no labelled sample"):
            s.train(TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 1, 1, TRAIN_PSEUDO, 1e30, 1.0))
        ev = s.evaluate()
        assert (ev.n, ev.accuracy, ev.loss) == (0, 0.0, 0.0)
        # a late label makes it trainable: one sample, weight 1
        r = label(s, [11], [3])
        assert (r.applied, r.labelled) == (1, 1)
        assert s.train(TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 1, 1)).num_examples == 1
    finally:
        board.stop()


def _answer(s: BoardSession, mtype: int, payload: bytes) -> tuple[str, bytes]:
    """(status name, the payload of an OK answer)."""
    try:
        return "OK", bytes(s.request(mtype, payload))
    except DeviceError as e:
        return _status_name(e), b""


def _status_name(e: DeviceError) -> str:
    return next(w for w in str(e).replace(":", " ").split() if w in Status.__members__)


def test_refusals_and_edges_alike_on_both_boards(host_fw: Path, tmp_path: Path) -> None:
    """Every LABEL / TRAIN / PUSH_SAMPLES / EVALUATE edge of issue 22 answered with the same status (and the same
    payload when OK) by the C board and the virtual board, in the documented order of checks."""
    vb = VirtualBoard(BoardConfig(device_id=DEVICE, fleet_key=tf.KEY, cache_capacity=CAPACITY))
    sv = BoardSession(InProcessTransport(vb), key=tf.KEY, seed=1)
    assert sv.hello().capabilities & Cap.LABELS
    x, y = tf.samples(10, 12)
    none = np.full(12, UNLABELLED)
    head = TrainRequest(1, 4, 0.05, 0.0, 0.0, 0.0, 1, 1).encode()[:28]

    def train(flags: int, tail: bytes = b"") -> tuple[int, bytes]:
        return MsgType.TRAIN, head + struct.pack("<I", flags) + tail

    def pseudo(m: float, w: float, extra: int = 0) -> tuple[int, bytes]:
        return train(TRAIN_PSEUDO | extra, struct.pack("<ff", m, w))

    def lab(*entries: tuple[int, int], n: int | None = None, cut: int = 0) -> tuple[int, bytes]:
        body = b"".join(struct.pack("<IH", i, v) for i, v in entries)
        p = struct.pack("<H", len(entries) if n is None else n) + body
        return MsgType.LABEL, p[: len(p) - cut] if cut > 0 else p + bytes(-cut)

    def push(labels: np.ndarray, clear: int = 0) -> tuple[int, bytes]:
        n = len(labels)
        p = struct.pack("<BBHH", 0, clear, n, 64) + np.asarray(labels, "<u2").tobytes()
        return MsgType.PUSH_SAMPLES, p + x[:n].tobytes()

    ev0 = (MsgType.EVALUATE, struct.pack("<I", 0))
    ev2 = (MsgType.EVALUATE, struct.pack("<I", 2))
    steps = [
        ev0,  # empty cache: CACHE_EMPTY
        pseudo(0.0, 1.0),  # empty cache: CACHE_EMPTY
        lab((0, 1)),  # nothing cached: skipped
        push(none, 1),
        ev0,  # all unlabelled: OK n = 0
        train(0),  # no labelled sample
        pseudo(1e30, 1.0),  # none confident
        pseudo(1e30, 1.0, 0x10),  # flags before it: UNSUPPORTED
        pseudo(float("inf"), 1.0, 0x10),  # fields before flags: MALFORMED
        train(0, struct.pack("<ff", 0.0, 1.0)),  # 40 bytes without PSEUDO
        train(TRAIN_PSEUDO),  # 32 bytes with PSEUDO
        train(TRAIN_PSEUDO, b"\x00" * 4),  # 36 bytes
        pseudo(float("nan"), 1.0),
        pseudo(0.0, 0.0),
        pseudo(0.0, -1.0),
        pseudo(0.0, 1.5),
        pseudo(-5.0, float("nan")),
        lab(),
        lab(n=65535),
        lab((1, 2), cut=1),
        lab((1, 2), cut=-1),
        lab((1, 2), (2, 10)),
        lab((1, 2), (2, 0xFFFE)),
        lab((1, 2), (2, 3), (1, 4), (11, 0xFFFF), (12, 1), (2**32 - 1, 1)),
        ev0,
        ev2,
        push(y, 0),
        push(np.r_[y[:3], 0xFFFE]),
        lab((3, 5), (20, 1), (23, 0xFFFF)),
        ev0,
        pseudo(-1.0, 0.5),
        pseudo(float("inf"), 0.5),  # pending first: UPDATE_PENDING
        train(0, struct.pack("<ff", 0.0, 1.0)),  # the length before everything: MALFORMED
    ]
    board = tf.HostBoard(tmp_path / "flash.bin", "--device-id", str(DEVICE)).start()
    try:
        sc = board.session()
        for i, (t, p) in enumerate(steps):
            c, v = _answer(sc, t, p), _answer(sv, t, p)
            assert c == v, (i, MsgType(t).name, c, v)
    finally:
        board.stop()
