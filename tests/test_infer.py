"""INFER (docs/protocol.md "InferRequest"): a host checks a board's numbers. The host C firmware (`fedtiny-fw
--model`, its own int8 interpreter) and the virtual board (TFLite Micro) with the same model answer the same bytes
for random inputs of every kind, equal to the Python reference (`head_forward_int8` and the tail of
docs/ondevice.md §1b for features; TFLite Micro, `fedtiny.model.runtime`, for the whole model); malformed requests
get the same status on both, and the boards keep answering.

The models: fedtiny's digits reference model (random weights, converted as scripts/gen_tfl_golden.py does) with a
SOFTMAX after its head, once with int8 input and output (tail SOFTMAX) and once with float input and output (QUANTIZE
first, tail SOFTMAX -> DEQUANTIZE). Needs cc + make, TensorFlow and tflite-micro.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.board.device import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError
from fedtiny.link.messages import (
    INFER_HEADER,
    Cap,
    InferOutput,
    InferRequest,
    InferResult,
    MsgType,
    SampleKind,
    Status,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.ondevice import Int8Head, head_forward_int8

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_firmware as tf

KEY = tf.KEY


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes, np.ndarray]]:
    """name -> (.tflite file, bytes, float samples): the digits model + SOFTMAX, int8 I/O and float I/O."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    import keras

    sys.path.insert(0, str(tf.ROOT / "scripts"))
    from gen_tfl_golden import _convert, _randomize

    from fedtiny.tasks import get_task

    keras.utils.set_random_seed(1234)
    task = get_task("digits")
    base = task.build_model(head_inputs=64)
    rng = np.random.default_rng(7)
    x = np.asarray(
        task.generate(rng.integers(0, len(task.classes), 60), rng, task.default_condition()), np.float32
    )
    _randomize(base, np.random.default_rng(21))
    model = keras.Model(base.input, keras.layers.Softmax()(base.output))
    out = {}
    d = tmp_path_factory.mktemp("infer")
    for name, float_io in (("int8", False), ("float", True)):
        tfl = _convert(model, x[:32], float_io=float_io)
        (d / f"{name}.tflite").write_bytes(tfl)
        out[name] = (d / f"{name}.tflite", tfl, x)
    return out


def _boards(tmp_path: Path, path: Path | None, model: bytes | None) -> Iterator[BoardSession]:
    """The host C firmware and the virtual board with the same model (or none), as sessions."""
    tf.make("build/host/fedtiny-fw")
    args = ("--device-id", "9") + (("--model", str(path)) if path else ())
    b = tf.HostBoard(tmp_path / "flash.bin", *args).start()
    vb = VirtualBoard(BoardConfig(device_id=9, fleet_key=KEY), model=model)
    try:
        sv = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        yield b.session()
        yield sv
    finally:
        b.stop()


def _raw(s: BoardSession, payload: bytes) -> tuple[int, bytes]:
    """(status, payload) of one INFER with a hand-made payload."""
    try:
        return Status.OK, s.request(MsgType.INFER, payload)
    except DeviceError as e:
        return e.status, b""


def _reference(model: bytes, head: Int8Head, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite Micro on the model with ``head`` written in, inputs ``x`` (int8 or float): (logits, model outputs)."""
    from fedtiny.model.flatbuffer import write_head
    from fedtiny.model.runtime import Int8Runner

    r = Int8Runner(write_head(model, head), "tflm")
    logits, _ = r.run_int8(r.prepare_inputs(x))
    return logits, np.stack(r.final)


@pytest.mark.parametrize("name", ["int8", "float"])
def test_infer_c_board_equals_virtual_board_and_reference(
    tmp_path: Path, models: dict[str, tuple[Path, bytes, np.ndarray]], name: str
) -> None:
    from fedtiny.model.flatbuffer import read_head, read_tail, write_head
    from fedtiny.model.runtime import Int8Runner

    path, model, x = models[name]
    runner = Int8Runner(model, "tflm")
    head = read_head(model)
    tail = read_tail(model)
    rng = np.random.default_rng(3)
    n = 12
    xi = rng.integers(-128, 128, (n, int(np.prod(runner.input_shape)))).astype(np.int8)  # kind 1
    xf = x[:n].reshape(n, -1)  # kind 2
    feats = rng.integers(-128, 128, (n, head.num_features)).astype(np.int8)  # kind 0
    # a head patch whose logit quantization differs from the model's: the tail runs with the running head's
    patched = head.with_(
        bias=head.bias + 7, output_scale=np.float32(head.output_scale * 1.5), output_zero_point=-3
    )
    answers: list[list[bytes]] = []
    statuses: list[list[int]] = []
    for s in _boards(tmp_path, path, model):
        assert s.hello().capabilities & Cap.INFER
        got: list[bytes] = []
        for h in (head, patched):
            s.set_head(h)
            for k in range(n):
                for q in (s.infer(xi[k]), s.infer(xf[k]), s.infer(feats[k], features=True)):
                    got.append(q.encode())
        answers.append(got)
        statuses.append(_refusals(s, len(xi[0]), head.num_features))
        assert s.infer(feats[0], features=True).encode() == got[-1 - 3 * (n - 1)]  # still up, same answer
    assert answers[0] == answers[1]
    assert statuses[0] == statuses[1]
    # the reference: TFLite Micro on the whole model, head_forward_int8 + the tail on features
    want_type = InferOutput.FLOAT32 if name == "float" else InferOutput.INT8
    i = 0
    for h in (head, patched):
        lg_i, out_i = _reference(model, h, xi)
        lg_f, out_f = _reference(model, h, xf)
        lg_0 = head_forward_int8(h, feats)
        t = read_tail(write_head(model, h))
        out_0 = np.stack([t.apply(lg_0[k][None])[0] for k in range(n)])
        for k in range(n):
            for lg, out in ((lg_i[k], out_i[k]), (lg_f[k], out_f[k]), (lg_0[k], out_0[k])):
                r = InferResult.decode(answers[0][i])
                i += 1
                assert r.out_type == want_type
                assert np.array_equal(r.logits, lg)
                assert r.output_bytes() == np.asarray(out).reshape(-1).astype(r.output.dtype).tobytes()
    assert [op.kind for op in tail.ops] == (["SOFTMAX", "DEQUANTIZE"] if name == "float" else ["SOFTMAX"])


def _refusals(s: BoardSession, raw_len: int, d: int) -> list[int]:
    """Malformed and refused INFER requests: their statuses, in the documented order of checks."""
    nan = np.zeros(raw_len, np.float32)
    nan[5] = np.nan
    inf = np.zeros(raw_len, np.float32)
    inf[-1] = np.inf
    reqs = [
        b"",  # no header: MALFORMED
        b"\x00\x00\x03",  # short header: MALFORMED
        INFER_HEADER.pack(0, 0, d) + bytes(d - 1),  # length: MALFORMED
        INFER_HEADER.pack(2, 0, 2) + bytes(2),  # kind 2 with int8-sized data: MALFORMED
        INFER_HEADER.pack(3, 0, 1) + bytes(1),  # kind 3: MALFORMED
        INFER_HEADER.pack(0, 0, d + 1) + bytes(d + 1),  # features of D + 1: SHAPE_MISMATCH
        INFER_HEADER.pack(1, 0, raw_len - 1) + bytes(raw_len - 1),  # raw of raw_input_len - 1: SHAPE_MISMATCH
        InferRequest(SampleKind.RAW_F32, nan).encode(),  # NaN: MALFORMED
        InferRequest(SampleKind.RAW_F32, inf).encode(),  # infinity: MALFORMED
        INFER_HEADER.pack(0, 0xAB, d) + bytes(d),  # the reserved byte is ignored: OK
    ]
    return [_raw(s, p)[0] for p in reqs]


def test_infer_refusals_documented(tmp_path: Path, models: dict[str, tuple[Path, bytes, np.ndarray]]) -> None:
    path, model, _ = models["int8"]
    M, SH, OK = Status.MALFORMED, Status.SHAPE_MISMATCH, Status.OK
    for s in _boards(tmp_path, path, model):
        assert _refusals(s, s.hello().raw_input_len, 64) == [M, M, M, M, M, SH, SH, M, M, OK]


def test_infer_without_backbone(tmp_path: Path) -> None:
    """No model: kind 0 runs the head only (out_type NONE, no output), raw kinds are UNSUPPORTED; both boards alike,
    equal to head_forward_int8 on the factory head (the C firmware's is the virtual board's default_head())."""
    head = default_head()
    feats = np.random.default_rng(5).integers(-128, 128, (20, head.num_features)).astype(np.int8)
    got = []
    for s in _boards(tmp_path, None, None):
        res = [s.infer(f, features=True) for f in feats]
        for r, lg in zip(res, head_forward_int8(head, feats)):
            assert r.out_type == InferOutput.NONE and len(r.output) == 0 and np.array_equal(r.logits, lg)
        raw = [_raw(s, InferRequest(1, np.zeros(4, np.int8)).encode())[0]]
        raw.append(_raw(s, InferRequest(2, np.zeros(4, np.float32)).encode())[0])
        assert raw == [Status.UNSUPPORTED, Status.UNSUPPORTED]
        got.append(b"".join(r.encode() for r in res))
        assert struct.unpack_from("<HBBH", res[0].encode()) == (head.num_classes, 0, 0, 0)
    assert got[0] == got[1]
