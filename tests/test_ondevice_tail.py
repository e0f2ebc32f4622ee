"""The tail after the head (SOFTMAX, LOGISTIC, RESHAPE, QUANTIZE, DEQUANTIZE) equals TFLite Micro bit for bit.

Oracle: the installed tflite_micro interpreter (its reference kernels). Two kinds of models:
- real conversions of tiny Keras classifiers (Dense -> Softmax / Reshape+Softmax / sigmoid / float I/O),
  run end to end: ``HeadTail.apply(head_forward_int8(head, x))`` against the interpreter's output;
- single-op models (the op fed directly by the model input), with the quantization rewritten in the
  flatbuffer to sweep scales, zero points and beta, fed arbitrary and extreme int8 logits (exhaustively
  for the element-wise ops).
The head and tail parameters are read from the flatbuffer here, with the schema module only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedtiny.errors import ModelError
from fedtiny.ondevice.head import Int8Head, head_forward_int8
from fedtiny.ondevice.quant import quantize
from fedtiny.ondevice.tail import PROB_SCALE, HeadTail, TailOp

tflm = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
fb = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
flatbuffers = pytest.importorskip("flatbuffers")

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
D = 16  # features into the head


# --- flatbuffer reading (the schema module only) ----------------------------------------------------------


def _op_name(model: Any, op: Any) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    return _OP_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]


def _qparams(sg: Any, t: int) -> tuple[float, int]:
    q = sg.Tensors(t).Quantization()
    if q is None or q.ScaleLength() == 0:
        return 0.0, 0  # float tensor
    return float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0])


def _read_head_tail(buf: bytes) -> tuple[Int8Head | None, HeadTail, list[str]]:
    """The FULLY_CONNECTED head (if any) and the ops after it (or after the input QUANTIZE, or all ops)."""
    model = fb.Model.GetRootAsModel(buf, 0)
    sg = model.Subgraphs(0)
    ops = [sg.Operators(i) for i in range(sg.OperatorsLength())]
    names = [_op_name(model, op) for op in ops]
    head = None
    start = 0
    if "FULLY_CONNECTED" in names:
        i = names.index("FULLY_CONNECTED")
        op = ops[i]
        x_t, w_t, b_t, y_t = op.Inputs(0), op.Inputs(1), op.Inputs(2), op.Outputs(0)
        wt = sg.Tensors(w_t)
        w = model.Buffers(wt.Buffer()).DataAsNumpy().view(np.int8).reshape(tuple(wt.ShapeAsNumpy()))
        ws = wt.Quantization().ScaleAsNumpy().astype(np.float32)
        if b_t >= 0:
            bias = model.Buffers(sg.Tensors(b_t).Buffer()).DataAsNumpy().view(np.int32).copy()
        else:
            bias = np.zeros(len(w), np.int32)
        (si, zi), (so, zo) = _qparams(sg, x_t), _qparams(sg, y_t)
        head = Int8Head(w.copy(), ws, bias, si, zi, so, zo)
        start = i + 1
    elif names[0] == "QUANTIZE" and sg.Tensors(ops[0].Inputs(0)).Type() == fb.TensorType.FLOAT32:
        start = 1  # float input: the model's own input QUANTIZE is not part of a tail
    tail = []
    for op in ops[start:]:
        name = _op_name(model, op)
        (si, zi), (so, zo) = _qparams(sg, op.Inputs(0)), _qparams(sg, op.Outputs(0))
        beta = 1.0
        if name == "SOFTMAX":
            opts = fb.SoftmaxOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            beta = float(opts.Beta())
        tail.append(TailOp(name, si, zi, so, zo, beta))
    return head, HeadTail(tuple(tail)), names


# --- flatbuffer editing (object API), to sweep quantization without re-converting -------------------------


def _edit(buf: bytes, fn: Callable[[Any], None]) -> bytes:
    m = fb.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    fn(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _set_q(m: Any, t: int, scale: float, zp: int) -> None:
    q = m.subgraphs[0].tensors[t].quantization
    q.scale, q.zeroPoint = [float(np.float32(scale))], [int(zp)]


def _opcode(m: Any, code: int) -> int:
    for i, c in enumerate(m.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    m.operatorCodes.append(oc)
    return len(m.operatorCodes) - 1


def _single_op(
    base: bytes, kind: str, in_q: tuple[float, int], out_q: tuple[float, int], beta: float = 1.0
) -> bytes:
    """Turn a one-SOFTMAX model into a one-``kind`` model with the given input/output quantization."""

    def fn(m: Any) -> None:
        sg = m.subgraphs[0]
        op = sg.operators[0]
        _set_q(m, op.inputs[0], *in_q)
        out = sg.tensors[op.outputs[0]]
        if kind == "DEQUANTIZE":
            out.type, out.quantization = fb.TensorType.FLOAT32, None
        else:
            _set_q(m, op.outputs[0], *out_q)
        if kind == "SOFTMAX":
            op.builtinOptions.beta = beta
        else:
            op.opcodeIndex = _opcode(m, getattr(fb.BuiltinOperator, kind))
            op.builtinOptionsType, op.builtinOptions = 0, None

    return _edit(base, fn)


def _append_requantize(buf: bytes, out_q: tuple[float, int]) -> bytes:
    """Append an int8 -> int8 QUANTIZE to the model's output (a tail ``... -> QUANTIZE``)."""

    def fn(m: Any) -> None:
        sg = m.subgraphs[0]
        old = sg.outputs[0]
        t = fb.TensorT()
        t.shape, t.type, t.name = list(sg.tensors[old].shape), fb.TensorType.INT8, "requantized"
        t.buffer = 0
        t.quantization = fb.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [float(np.float32(out_q[0]))], [out_q[1]]
        sg.tensors.append(t)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = (
            _opcode(m, fb.BuiltinOperator.QUANTIZE),
            [old],
            [len(sg.tensors) - 1],
        )
        sg.operators.append(op)
        sg.outputs = [len(sg.tensors) - 1]

    return _edit(buf, fn)


def _patch_logits(buf: bytes, scale: float, zp: int, beta: float | None = None) -> bytes:
    """Rewrite the head's logit quantization (FC output = softmax input) and optionally softmax beta."""

    def fn(m: Any) -> None:
        sg = m.subgraphs[0]
        for op in sg.operators:
            name = _OP_NAMES[
                max(
                    m.operatorCodes[op.opcodeIndex].builtinCode,
                    m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode,
                )
            ]
            if name == "FULLY_CONNECTED":
                _set_q(m, op.outputs[0], scale, zp)
            if name == "SOFTMAX" and beta is not None:
                op.builtinOptions.beta = beta

    return _edit(buf, fn)


# --- running the interpreter ---------------------------------------------------------------------------


def _run(buf: bytes, inputs: np.ndarray) -> np.ndarray:
    """The interpreter's output for each row of ``inputs`` (batch-1 model, one invoke per row)."""
    it = tflm.Interpreter.from_bytes(buf, arena_size=64 * 1024)
    outs = []
    for row in inputs:
        it.set_input(row[None, :], 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(outs)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == np.float32:  # bit equality, not just ==
        got, want = got.view(np.uint32), want.view(np.uint32)
    bad = np.argwhere(got != want)
    assert len(bad) == 0, (
        f"{len(bad)} mismatches, first at {bad[:5].tolist()}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}"
    )


def _logit_cases(rng: np.random.Generator, c: int, n: int) -> np.ndarray:
    """Random int8 logits plus the extremes: flat rows, one-hot, ties at the max, close calls, ramps."""
    rows: list[np.ndarray] = [
        rng.integers(-128, 128, (n // 2, c)),
        rng.integers(-128, 128, (n // 4, 1)) + rng.integers(-4, 5, (n // 4, c)),
    ]
    rows.append(np.array([np.full(c, v) for v in (-128, -127, -1, 0, 1, 126, 127)]))
    hot = np.full((c, c), -128)
    np.fill_diagonal(hot, 127)
    rows += [hot, np.where(hot == 127, -127, 127)]
    tie = np.full((1, c), -128)
    tie[0, [0, c - 1]] = 127
    rows.append(tie)
    rows.append(np.linspace(-128, 127, c).round().astype(np.int64)[None, :])
    rows.append(rng.choice(np.array([-128, 127]), (n // 8, c)))
    return np.clip(np.concatenate(rows), -128, 127).astype(np.int8)


# --- the models ----------------------------------------------------------------------------------------


def _convert(layers: list[Any], in_dim: int, io: str = "int8", seed: int = 0) -> bytes:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(in_dim,), batch_size=1)
    x = inp
    for layer in layers:
        x = layer(x)
    model = keras.Model(inp, x)
    rep = np.random.default_rng(seed).normal(size=(128, in_dim)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8 if io == "int8" else tf.float32
    return bytes(conv.convert())


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    """A handful of conversions, once per module (TensorFlow only here, in the test process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    def dense(c: int, std: float) -> Any:
        init = keras.initializers.RandomNormal(stddev=std)
        return keras.layers.Dense(
            c, kernel_initializer=init, bias_initializer=keras.initializers.RandomNormal(stddev=std)
        )

    out = {}
    for c, std in ((2, 0.3), (10, 0.05), (10, 1.0), (35, 4.0)):
        out[f"softmax_c{c}_w{std}"] = _convert([dense(c, std), keras.layers.Softmax()], D, seed=c)
    out["reshape_softmax"] = _convert(
        [dense(10, 0.5), keras.layers.Reshape((1, 10)), keras.layers.Softmax()], D, seed=1
    )
    out["logistic"] = _convert([dense(12, 0.5), keras.layers.Activation("sigmoid")], D, seed=2)
    out["float_io"] = _convert([dense(10, 0.5), keras.layers.Softmax()], D, io="float32", seed=3)
    for c in (2, 10, 35, 256):  # bare ops, fed logits directly
        out[f"bare_c{c}"] = _convert([keras.layers.Softmax()], c, seed=4)
    return out


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.integers(-128, 128, (n, D))
    extremes = np.array([np.full(D, -128), np.full(D, 127), np.full(D, 0), np.tile([-128, 127], D // 2)])
    return np.concatenate([x, extremes]).astype(np.int8)


# --- end to end through converted models ------------------------------------------------------------------

_EXPECTED = {
    "softmax": ["FULLY_CONNECTED", "SOFTMAX"],
    "reshape_softmax": ["FULLY_CONNECTED", "RESHAPE", "SOFTMAX"],
    "logistic": ["FULLY_CONNECTED", "LOGISTIC"],
    "float_io": ["QUANTIZE", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"],
}


def test_converted_models_head_then_tail_bit_exact(models: dict[str, bytes]) -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for name, buf in models.items():
        if name.startswith("bare"):
            continue
        head, tail, names = _read_head_tail(buf)
        assert head is not None and names == _EXPECTED[name.split("_c")[0]]
        assert (tail.ops[0].input_scale, tail.ops[0].input_zero_point) == (
            head.output_scale,
            head.output_zero_point,
        )
        x = _features(rng, 1500)
        feed: np.ndarray = x
        if name == "float_io":  # float features that the model's input QUANTIZE maps back onto x exactly
            feed = (x.astype(np.float32) - np.float32(head.input_zero_point)) * np.float32(head.input_scale)
            assert np.array_equal(quantize(feed, head.input_scale, head.input_zero_point), x)
        want = _run(buf, feed)
        got = tail.apply(head_forward_int8(head, x))
        _assert_same(got, want)
        assert np.array_equal(tail.predict(head_forward_int8(head, x)), np.argmax(want, axis=-1))
        checked += len(x)
    assert checked >= 10_000


def test_logit_quantization_sweep_through_the_head(models: dict[str, bytes]) -> None:
    """The logit scale/zero point and beta, rewritten in the flatbuffer: multipliers and diff_min vary."""
    rng = np.random.default_rng(1)
    base = models["softmax_c10_w1.0"]
    for scale, zp, beta in [(0.004, -100, 1.0), (0.02, 0, 1.0), (0.09, 40, 1.0), (0.35, -128, 1.0), (1.3, 127, 1.0),
                            (6.0, 5, 1.0), (0.05, -20, 0.25), (0.05, -20, 3.0)]:  # fmt: skip
        buf = _patch_logits(base, scale, zp, beta)
        head, tail, _ = _read_head_tail(buf)
        assert head is not None and tail.ops[0].beta == np.float32(beta)
        x = _features(rng, 1000)
        _assert_same(tail.apply(head_forward_int8(head, x)), _run(buf, x))


def test_softmax_then_requantize_chain(models: dict[str, bytes]) -> None:
    rng = np.random.default_rng(2)
    for out_q in [(0.0078125, 0), (0.003, -50), (0.01, 100)]:
        buf = _append_requantize(models["softmax_c10_w0.05"], out_q)
        head, tail, _ = _read_head_tail(buf)
        assert head is not None and tail.describe() == "SOFTMAX → QUANTIZE"
        x = _features(rng, 500)
        _assert_same(tail.apply(head_forward_int8(head, x)), _run(buf, x))


# --- each op alone, fed logits directly -------------------------------------------------------------------

_SOFTMAX_GRID = [  # (input scale, zero point, beta): diff_min from 0 (capped multiplier) to beyond -255
    (1e-4, 0, 1.0), (0.001, -128, 1.0), (0.0123, 7, 1.0), (0.0285, -15, 1.0), (0.0625, 0, 1.0), (0.1, 127, 1.0),
    (0.37, -60, 1.0), (1.0, 0, 1.0), (3.7, 20, 1.0), (20.0, 0, 1.0), (40.0, -3, 1.0), (0.05, 0, 0.1), (0.05, 0, 7.5),
]  # fmt: skip


def test_softmax_alone_bit_exact(models: dict[str, bytes]) -> None:
    rng = np.random.default_rng(3)
    diff_mins = set()
    for c in (2, 10, 35):
        logits = _logit_cases(rng, c, 1000)
        drawn = [(float(10 ** rng.uniform(-3, 0.5)), int(rng.integers(-128, 128)), 1.0) for _ in range(7)]
        for scale, zp, beta in _SOFTMAX_GRID + drawn:
            buf = _single_op(models[f"bare_c{c}"], "SOFTMAX", (scale, zp), (PROB_SCALE, -128), beta)
            _, tail, names = _read_head_tail(buf)
            assert names == ["SOFTMAX"]
            diff_mins.add(tail.ops[0].softmax_params()[2])
            _assert_same(tail.apply(logits), _run(buf, logits))
    assert min(diff_mins) < -255 and max(diff_mins) == 0  # every difference used, and only the max used


def test_logistic_alone_exhaustive(models: dict[str, bytes]) -> None:
    every = np.arange(-128, 128, dtype=np.int8)[None, :]
    for scale in (1e-3, 0.01, 0.03507879, 0.0625, 0.1, 0.5, 1.0, 4.0, 16.0, 40.0):
        for zp in (-128, -30, 0, 77, 127):
            buf = _single_op(models["bare_c256"], "LOGISTIC", (scale, zp), (PROB_SCALE, -128))
            _, tail, names = _read_head_tail(buf)
            assert names == ["LOGISTIC"]
            _assert_same(tail.apply(every), _run(buf, every))


def test_requantize_alone_exhaustive(models: dict[str, bytes]) -> None:
    every = np.arange(-128, 128, dtype=np.int8)[None, :]
    for in_q in [(0.02853315, -15), (0.5, 100), (0.001, -128)]:
        for out_q in [
            (0.02853315, -15),
            (0.0571, 3),
            (0.0142, -90),
            (0.9, 0),
            (1e-4, 127),
            (0.02853316, -15),
        ]:
            buf = _single_op(models["bare_c256"], "QUANTIZE", in_q, out_q)
            _, tail, names = _read_head_tail(buf)
            assert names == ["QUANTIZE"]
            _assert_same(tail.apply(every), _run(buf, every))


def test_dequantize_alone_exhaustive(models: dict[str, bytes]) -> None:
    every = np.arange(-128, 128, dtype=np.int8)[None, :]
    for in_q in [(PROB_SCALE, -128), (0.02853315, -15), (0.1234567, 100), (3.3e-5, 0)]:
        buf = _single_op(models["bare_c256"], "DEQUANTIZE", in_q, (0.0, 0))
        _, tail, names = _read_head_tail(buf)
        assert names == ["DEQUANTIZE"] and tail.output_dtype is np.float32
        _assert_same(tail.apply(every), _run(buf, every))


# --- API ----------------------------------------------------------------------------------------------------


def test_predict_ties_go_to_the_lowest_index() -> None:
    soft = HeadTail((TailOp("SOFTMAX", 0.5, 0, PROB_SCALE, -128),))
    logits = np.array([[3, 9, 9, 1], [5, 5, 5, 5], [-128, -128, 127, 127]], dtype=np.int8)
    assert soft.predict(logits).tolist() == [1, 0, 2]
    # Logits that differ by one step can give equal probabilities: the first of them wins, as on the board.
    fine = HeadTail((TailOp("SOFTMAX", 1e-4, 0, PROB_SCALE, -128),))
    close = np.array([[0, 1, 1, -1]], dtype=np.int8)
    out = fine.apply(close)
    assert out[0, 0] == out[0, 1] == out[0, 2] and fine.predict(close).tolist() == [0]
    assert np.argmax(close, axis=-1).tolist() == [1]
    identity = HeadTail(())
    assert identity.describe() == "(none)" and np.array_equal(identity.apply(logits), logits)
    assert identity.predict(logits).tolist() == [1, 0, 2]


def test_round_trip_through_json() -> None:
    tail = HeadTail(
        (
            TailOp("RESHAPE", 0.02994732, 17, 0.02994732, 17),
            TailOp("SOFTMAX", 0.02994732, 17, PROB_SCALE, -128, beta=0.7),
            TailOp("QUANTIZE", PROB_SCALE, -128, 0.003, -50),
            TailOp("DEQUANTIZE", 0.003, -50, 0.0, 0),
        )
    )
    again = HeadTail.from_list(json.loads(json.dumps(tail.to_list())))
    assert again == tail and again.describe() == "RESHAPE → SOFTMAX → QUANTIZE → DEQUANTIZE"
    assert tail.ops[1].beta == float(np.float32(0.7))  # stored as the flatbuffer stores it
    x = np.random.default_rng(4).integers(-128, 128, (50, 7)).astype(np.int8)
    _assert_same(again.apply(x), tail.apply(x))
    assert tail.apply(x).dtype == np.float32 and tail.apply(x[0]).shape == (7,)


def test_invalid_tails_are_refused() -> None:
    with pytest.raises(ModelError):
        TailOp("ARG_MAX", 0.1, 0, 0.1, 0)
    with pytest.raises(ModelError):
        TailOp("SOFTMAX", 0.1, 0, 0.1, 0)  # TFLM requires 1/256, -128
    with pytest.raises(ModelError):
        TailOp("LOGISTIC", 0.1, 0, PROB_SCALE, 0)
    with pytest.raises(ModelError):  # consecutive ops must share the tensor's quantization
        HeadTail((TailOp("RESHAPE", 0.1, 0, 0.1, 0), TailOp("SOFTMAX", 0.2, 0, PROB_SCALE, -128)))
    with pytest.raises(ModelError):
        HeadTail((TailOp("DEQUANTIZE", 0.1, 0, 0.1, 0), TailOp("RESHAPE", 0.1, 0, 0.1, 0)))
    with pytest.raises(ModelError):
        HeadTail(()).apply(np.zeros(3, np.int32))
    with pytest.raises(ModelError):
        TailOp.from_dict({"kind": "SOFTMAX"})
