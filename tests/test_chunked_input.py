"""Raw inputs larger than one frame (docs/protocol.md "STAGE_INPUT"): a model whose raw input (48x48x3 = 6,912 int8
bytes, 27,648 as float32) exceeds max_payload (4,096 on the host C firmware and the virtual board, 1,024 on a second
virtual board) gets its raw samples pushed and its INFER requests answered through STAGE_INPUT pieces and the staged
kinds 3 and 4 (then EVALUATE, TRAIN and a CONFIRM on the staged input); both boards answer the same bytes,
equal to TFLite Micro. A dropped piece is resumed from the staged
length the BAD_OFFSET answer gives; malformed pieces and staged-kind requests get the same status on both boards,
which keep answering. Needs cc + make, TensorFlow and tflite-micro.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.board.device import BoardConfig, VirtualBoard
from fedtiny.errors import DeviceError, ProtocolError
from fedtiny.link.messages import (
    INFER_HEADER,
    SAMPLES_HEADER,
    STAGE_INPUT_HEADER,
    Cap,
    InferResult,
    MsgType,
    SampleKind,
    Status,
    TrainRequest,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_firmware as tf

KEY = tf.KEY
SHAPE = (48, 48, 3)
RAW = int(np.prod(SHAPE))  # 6,912 elements: one int8 input is larger than a 4,096-byte frame
CAP = (
    32768  # the staging buffer of both boards (FT_MAX_STAGED_INPUT on the host C firmware, max_staged_input)
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, np.ndarray]:
    """A small int8 model on 48x48x3 inputs: CONV_2D, AVERAGE_POOL_2D, MEAN, FC 16, the head FC 4, SOFTMAX."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    import keras

    sys.path.insert(0, str(tf.ROOT / "scripts"))
    from gen_tfl_golden import _convert, _randomize

    keras.utils.set_random_seed(99)
    inp = keras.Input(SHAPE)
    h = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inp)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Softmax()(keras.layers.Dense(4)(h))
    m = keras.Model(inp, out)
    _randomize(m, np.random.default_rng(5))
    x = np.random.default_rng(6).uniform(-1, 1, (24, *SHAPE)).astype(np.float32)
    tfl = _convert(m, x[:16])
    path = tmp_path_factory.mktemp("chunked") / "m.tflite"
    path.write_bytes(tfl)
    return path, tfl, x


def _boards(tmp_path: Path, path: Path | None, model: bytes | None) -> Iterator[BoardSession]:
    """The host C firmware, the virtual board (max_payload 4,096) and a virtual board with max_payload 1,024."""
    tf.make("build/host/fedtiny-fw")
    args = ("--device-id", "9") + (("--model", str(path)) if path else ())
    b = tf.HostBoard(tmp_path / "flash.bin", *args).start()
    try:
        yield b.session()
        for mp in (4096, 1024):
            vb = VirtualBoard(BoardConfig(device_id=9, fleet_key=KEY, max_payload=mp), model=model)
            sv = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
            sv.hello()
            yield sv
    finally:
        b.stop()


def _req(s: BoardSession, mtype: int, payload: bytes) -> tuple[int, bytes]:
    """(status, payload or reason) of one hand-made request."""
    try:
        return Status.OK, s.request(mtype, payload)
    except DeviceError as e:
        return e.status, e.detail.encode()


def test_push_and_infer_through_chunks_equal_tflm(
    tmp_path: Path, model: tuple[Path, bytes, np.ndarray]
) -> None:
    from fedtiny.model.runtime import Int8Runner

    path, tfl, x = model
    rng = np.random.default_rng(8)
    xi = rng.integers(-128, 128, (5, RAW)).astype(np.int8)  # kind 1, staged as kind 3
    xf = x[:5].reshape(5, -1)  # kind 2, staged as kind 4
    labels = np.array([0, 1, 2, 3, 1])
    answers: list[list[bytes]] = []
    for s in _boards(tmp_path, path, tfl):
        info = s.hello()
        assert info.capabilities & Cap.STAGED_INPUT and info.raw_input_len == RAW
        assert RAW > s.max_payload  # one int8 input does not fit a frame
        got = [s.infer(xi[k]).encode() for k in range(5)] + [s.infer(xf[k]).encode() for k in range(5)]
        ids = s.push_raw_ids(xi, labels, clear=True)
        assert ids.cached == 5 and list(ids.ids) == list(range(ids.pushed_total - 5, ids.pushed_total))
        assert s.push_raw(xf, labels) == 10
        ev = s.evaluate()
        got.append(struct.pack("<Iff", ev.n, ev.accuracy, ev.loss))
        # TRAIN on the features the staged inputs gave: the same update (weights, bias, loss) on every board
        tr = s.train(TrainRequest(2, 4, 0.05, 0.9, 0.0, 0.0, 7, 1))
        up = s.read_update()
        s.ack_update(up.update_id)
        assert tr.num_examples == up.num_examples == 10
        got.append(up.weights.tobytes() + up.bias.tobytes() + struct.pack("<f", up.loss))
        answers.append(got)
        assert s.infer(xi[0]).encode() == got[0]  # the staged input is still used the same way
    assert answers[0] == answers[1] == answers[2]
    # TFLite Micro on the whole model (the board's head is the model's own): logits and output 0
    r = Int8Runner(tfl, "tflm")
    for k, xs in enumerate((xi, xf)):
        logits, _ = r.run_int8(r.prepare_inputs(xs))
        for j in range(5):
            res = InferResult.decode(answers[0][5 * k + j])
            assert np.array_equal(res.logits, logits[j])
            assert res.output_bytes() == np.asarray(r.final[j]).reshape(-1).astype(np.int8).tobytes()
    assert ev.n == 10


def test_resume_after_a_dropped_piece(tmp_path: Path, model: tuple[Path, bytes, np.ndarray]) -> None:
    path, tfl, _ = model
    x = np.random.default_rng(9).integers(-128, 128, RAW).astype(np.int8)
    data = x.tobytes()
    piece = 1000
    for s in _boards(tmp_path, path, tfl):
        want = s.infer(x).encode()
        assert _req(s, MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(RAW, 0) + data[:piece]) == (
            Status.OK,
            struct.pack("<I", piece),
        )
        # the piece at 1000 is lost: the one at 2000 is refused with the staged length, nothing staged
        st, why = _req(
            s, MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(RAW, 2 * piece) + data[2 * piece : 3 * piece]
        )
        assert (st, why) == (Status.BAD_OFFSET, b"staged 1000")
        # an incomplete staging is not used
        assert (
            _req(s, MsgType.INFER, INFER_HEADER.pack(SampleKind.STAGED_INT8, 0, RAW))[0] == Status.BAD_STATE
        )
        off = int(why.split()[1])
        while off < RAW:  # resume from the staged length
            st, p = _req(s, MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(RAW, off) + data[off : off + piece])
            assert st == Status.OK
            (off,) = struct.unpack("<I", p)
        st, p = _req(s, MsgType.INFER, INFER_HEADER.pack(SampleKind.STAGED_INT8, 0, RAW))
        assert (st, p) == (Status.OK, want)
        assert _req(s, MsgType.INFER, INFER_HEADER.pack(SampleKind.STAGED_INT8, 0, RAW)) == (Status.OK, want)
        # the session resumes by itself: a staging left half-done, then a whole stage_input
        s.request(MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(RAW, 0) + data[:piece])
        assert s.stage_input(data) == RAW
        s.reset()  # a reset loses the staged input
        s.hello()
        assert (
            _req(s, MsgType.INFER, INFER_HEADER.pack(SampleKind.STAGED_INT8, 0, RAW))[0] == Status.BAD_STATE
        )


def _refusals(s: BoardSession) -> list[tuple[int, bytes]]:
    """Malformed and refused STAGE_INPUT pieces and staged-kind requests, in the documented order of checks."""
    si = MsgType.STAGE_INPUT
    hdr = STAGE_INPUT_HEADER.pack
    nan = np.zeros(RAW, np.float32)
    nan[7] = np.nan
    reqs: list[tuple[int, bytes]] = [
        (si, b""),  # no header: MALFORMED
        (si, bytes(7)),  # short header: MALFORMED
        (si, hdr(0, 0)),  # total 0: NO_SPACE
        (si, hdr(CAP + 1, 0) + bytes(10)),  # total over the buffer: NO_SPACE
        (
            si,
            hdr(0xFFFFFFFF, 0xFFFFFFF0) + bytes(20),
        ),  # total over the buffer, offset + len overflows: NO_SPACE
        (si, hdr(10, 11)),  # offset past total: MALFORMED
        (si, hdr(10, 8) + bytes(3)),  # data past total: MALFORMED
        (si, hdr(10, 0xFFFFFFFF) + bytes(2)),  # offset + len overflows u32: MALFORMED
        (si, hdr(10, 4) + bytes(2)),  # nothing staged: BAD_OFFSET, staged 0
        (si, hdr(10, 0) + bytes(4)),  # OK, staged 4
        (si, hdr(10, 6) + bytes(2)),  # a gap: BAD_OFFSET, staged 4
        (si, hdr(10, 2) + bytes(2)),  # a duplicate: BAD_OFFSET, staged 4
        (si, hdr(12, 4) + bytes(2)),  # another total: BAD_OFFSET, staged 0
        (si, hdr(10, 4) + bytes(6)),  # OK, staged 10 (complete, 10 bytes: no kind's size)
        (si, hdr(10, 10)),  # an empty piece at the end: OK, staged 10
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 1, RAW) + b"\0\0"),  # 10 bytes staged: BAD_STATE
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 1, RAW) + b"\0\0" + b"\1"),  # length: MALFORMED
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 2, RAW) + bytes(4)),  # n = 2: MALFORMED
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(5, 0, 1, 1) + bytes(3)),  # kind 5: MALFORMED
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(4, 0, 1, RAW - 1) + b"\0\0"),  # dim: SHAPE_MISMATCH
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 1, RAW) + b"\x09\x00"),  # label 9 >= C: MALFORMED
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 0, RAW)),  # n = 0: OK, nothing cached
        (MsgType.INFER, INFER_HEADER.pack(4, 0, RAW)),  # 10 bytes staged: BAD_STATE
        (MsgType.INFER, INFER_HEADER.pack(3, 0, RAW) + b"\0"),  # length: MALFORMED
        (MsgType.INFER, INFER_HEADER.pack(5, 0, 0)),  # kind 5: MALFORMED
        (MsgType.INFER, INFER_HEADER.pack(3, 0, RAW + 1)),  # dim: SHAPE_MISMATCH
    ]
    out = [_req(s, t, p) for t, p in reqs]
    s.stage_input(nan.tobytes())  # a float32 input with a NaN: kind 4 refused, kind 3 (other size) BAD_STATE
    for t, p in (
        (MsgType.INFER, INFER_HEADER.pack(4, 0, RAW)),
        (MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(4, 0, 1, RAW) + b"\0\0"),
        (MsgType.INFER, INFER_HEADER.pack(3, 0, RAW)),
    ):
        out.append(_req(s, t, p))
    return out


def test_malformed_pieces_same_status_on_both_boards(
    tmp_path: Path, model: tuple[Path, bytes, np.ndarray]
) -> None:
    path, tfl, _ = model
    M, NS, BO, BS, SH, OK = (
        Status.MALFORMED,
        Status.NO_SPACE,
        Status.BAD_OFFSET,
        Status.BAD_STATE,
        Status.SHAPE_MISMATCH,
        Status.OK,
    )
    want = [
        M,
        M,
        NS,
        NS,
        NS,
        M,
        M,
        M,
        BO,
        OK,
        BO,
        BO,
        BO,
        OK,
        OK,
        BS,
        M,
        M,
        M,
        SH,
        M,
        OK,
        BS,
        M,
        M,
        SH,
        M,
        M,
        BS,
    ]
    got = []
    for s in _boards(tmp_path, path, tfl):
        res = _refusals(s)
        assert [st for st, _ in res] == want
        staged = [(st, p) for st, p in res if st in (BO, OK)][:7]
        assert staged[0] == (BO, b"staged 0") and staged[1][1] == struct.pack("<I", 4)
        assert [p for _, p in staged[2:5]] == [b"staged 4", b"staged 4", b"staged 0"]
        assert s.hello().raw_input_len == RAW  # still up
        got.append([st for st, _ in res])
    assert got[0] == got[1] == got[2]


def test_without_backbone_or_staging(tmp_path: Path) -> None:
    """No model: staging works (it needs no backbone), the staged kinds are UNSUPPORTED as the raw ones; a board
    without a staging buffer answers UNSUPPORTED to STAGE_INPUT and does not advertise STAGED_INPUT."""
    for s in _boards(tmp_path, None, None):
        assert s.stage_input(bytes(100)) == 100
        assert (
            _req(s, MsgType.PUSH_SAMPLES, SAMPLES_HEADER.pack(3, 0, 1, 100) + b"\0\0")[0]
            == Status.UNSUPPORTED
        )
        assert _req(s, MsgType.INFER, INFER_HEADER.pack(3, 0, 100))[0] == Status.UNSUPPORTED
    vb = VirtualBoard(BoardConfig(device_id=9, fleet_key=KEY, max_staged_input=0))
    s = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
    assert not s.hello().capabilities & Cap.STAGED_INPUT
    assert _req(s, MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(10, 0))[0] == Status.UNSUPPORTED
    assert _req(s, MsgType.INFER, INFER_HEADER.pack(3, 0, 100))[0] == Status.UNSUPPORTED
    with pytest.raises(ProtocolError):  # too large for one frame, and the board cannot stage it
        s.infer(np.zeros(5000, np.int8))


def test_confirm_with_the_staged_input(tmp_path: Path, model: tuple[Path, bytes, np.ndarray]) -> None:
    """CONFIRM in_len 0: the staged input is the golden vector's input (a raw input larger than a frame). The full
    image under test runs on it; refusals in the documented order, the same on both boards."""
    from fedtiny.link.messages import CONFIRM_HEADER, ImageKind, SlotState
    from fedtiny.model.runtime import Int8Runner

    path, tfl, _ = model
    x = np.random.default_rng(10).integers(-128, 128, RAW).astype(np.int8)
    r = Int8Runner(tfl, "tflm")
    want = r.run_int8(x[None])[0][0]
    bad = want.copy()
    bad[1] = np.int8(int(bad[1]) ^ 0x40)
    results = []
    for s in _boards(tmp_path, path, tfl):
        st = s.upload(tfl, kind=ImageKind.TFLITE, key=KEY)
        s.verify(st.slot)
        s.activate(st.slot)

        def conf(expected: np.ndarray, n: int = 1, s: BoardSession = s, slot: int = st.slot) -> int:
            p = CONFIRM_HEADER.pack(slot, 0, n, 0, 4) + np.tile(expected.astype(np.int8), n).tobytes()
            return _req(s, MsgType.CONFIRM, p)[0]

        s.request(MsgType.STAGE_INPUT, STAGE_INPUT_HEADER.pack(RAW, 0) + x[:100].tobytes())
        got = [conf(want)]  # incomplete staging: BAD_STATE
        s.stage_input(np.zeros(RAW, np.float32).tobytes())  # float32-sized: BAD_STATE (CONFIRM takes int8)
        got.append(conf(want))
        got.append(
            _req(s, MsgType.CONFIRM, CONFIRM_HEADER.pack(st.slot, 0, 1, 0, 3) + bytes(3))[0]
        )  # out_len
        s.stage_input(x.tobytes())
        got.append(conf(bad))  # SELFTEST_FAILED, still TESTING
        assert s.status().slots[st.slot].state == SlotState.TESTING
        got.append(conf(want, 2))  # OK: every vector's input is the staged one
        assert s.status().slots[st.slot].state == SlotState.CONFIRMED
        results.append(got)
        assert s.infer(x).logits.tolist() == want.tolist()
    assert results[0] == results[1] == results[2]
    assert results[0] == [
        Status.BAD_STATE,
        Status.BAD_STATE,
        Status.UNSUPPORTED,
        Status.SELFTEST_FAILED,
        Status.OK,
    ]


def test_session_confirm_stages_a_large_golden_input(model: tuple[Path, bytes, np.ndarray]) -> None:
    """BoardSession.confirm / deploy_model with one raw golden input larger than a frame: staged, in_len 0."""
    from fedtiny.link.messages import ImageKind, SlotState
    from fedtiny.model.runtime import Int8Runner

    _, tfl, _ = model
    x = np.random.default_rng(11).integers(-128, 128, (1, RAW)).astype(np.int8)
    want = Int8Runner(tfl, "tflm").run_int8(x)[0]
    vb = VirtualBoard(BoardConfig(device_id=9, fleet_key=KEY, max_payload=1024), model=tfl)
    s = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
    s.hello()
    st = s.upload(tfl, kind=ImageKind.TFLITE, key=KEY)
    s.verify(st.slot)
    s.activate(st.slot)
    assert s.confirm(st.slot, x, want).slots[st.slot].state == SlotState.CONFIRMED
