"""Read and rewrite the head of an int8 .tflite flatbuffer in place, without re-conversion.

Uses the generated schema module that tflite-micro ships (no TensorFlow import). The head is the
FULLY_CONNECTED op that produces the model's output. Writing patches exactly the bytes that hold the head
(weights, bias, weight scales, logit scale/zero point), so the model stays byte-identical elsewhere.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from fedtiny.errors import ModelError
from fedtiny.ondevice.head import Int8Head

_FULLY_CONNECTED = fb.BuiltinOperator.FULLY_CONNECTED
_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}


_F = TypeVar("_F", bound=Callable[..., Any])


def _parsing(fn: _F) -> _F:
    """Flatbuffer accessors fail lazily on truncated or corrupt files: report that as a ModelError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (struct.error, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"corrupt or truncated .tflite flatbuffer ({exc})") from None

    return wrapper  # type: ignore[return-value]


def _load(data: bytes | bytearray) -> fb.Model:
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise ModelError("not a .tflite flatbuffer (missing 'TFL3' identifier)")
    return fb.Model.GetRootAsModel(data, 0)


@_parsing
def op_names(data: bytes | bytearray) -> list[str]:
    """Builtin operator names of the first subgraph, in execution order."""
    model = _load(data)
    sg = model.Subgraphs(0)
    out = []
    for i in range(sg.OperatorsLength()):
        code = model.OperatorCodes(sg.Operators(i).OpcodeIndex())
        out.append(_OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    return out


@dataclass(frozen=True)
class _HeadRefs:
    op_index: int
    input: int
    weights: int
    bias: int
    output: int


def _find_head(model: fb.Model) -> _HeadRefs:
    sg = model.Subgraphs(0)
    out_tensor = sg.Outputs(0)
    for i in range(sg.OperatorsLength() - 1, -1, -1):
        op = sg.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == _FULLY_CONNECTED and op.Outputs(0) == out_tensor:
            if op.InputsLength() < 3 or op.Inputs(2) < 0:
                raise ModelError("the head FULLY_CONNECTED has no bias tensor")
            return _HeadRefs(i, op.Inputs(0), op.Inputs(1), op.Inputs(2), op.Outputs(0))
    raise ModelError("no FULLY_CONNECTED op produces the model output: cannot find the head")


def _tensor_info(model: fb.Model, index: int) -> tuple[fb.Tensor, np.ndarray, np.ndarray]:
    t = model.Subgraphs(0).Tensors(index)
    q = t.Quantization()
    if q is None or q.ScaleLength() == 0:
        raise ModelError(f"tensor '{t.Name().decode()}' is not quantized")
    return t, q.ScaleAsNumpy(), q.ZeroPointAsNumpy()


def _buffer_view(model: fb.Model, tensor: fb.Tensor, dtype: type) -> np.ndarray:
    buf = model.Buffers(tensor.Buffer())
    if buf.DataLength() == 0:
        raise ModelError(f"tensor '{tensor.Name().decode()}' has no constant data")
    return buf.DataAsNumpy().view(dtype)


@_parsing
def read_head(data: bytes | bytearray) -> Int8Head:
    """The int8 head of a full-integer model."""
    model = _load(data)
    refs = _find_head(model)
    sg = model.Subgraphs(0)
    w_t, w_scale, w_zp = _tensor_info(model, refs.weights)
    if w_t.Type() != fb.TensorType.INT8:
        raise ModelError(f"head weights are {_TYPE_NAMES.get(w_t.Type())}, expected INT8 (full-integer model)")
    if np.any(w_zp != 0):
        raise ModelError("head weights must be symmetric (zero point 0)")
    shape = w_t.ShapeAsNumpy()
    weights = _buffer_view(model, w_t, np.int8).reshape(shape).copy()
    bias_t = sg.Tensors(refs.bias)
    bias = _buffer_view(model, bias_t, np.int32).copy()
    _, in_scale, in_zp = _tensor_info(model, refs.input)
    _, out_scale, out_zp = _tensor_info(model, refs.output)
    scales = np.broadcast_to(w_scale.astype(np.float32), (shape[0],)).copy()
    return Int8Head(weights, scales, bias, float(in_scale[0]), int(in_zp[0]), float(out_scale[0]), int(out_zp[0]))


@_parsing
def write_head(data: bytes | bytearray, head: Int8Head) -> bytes:
    """A copy of the model with ``head`` written in place (same shapes required)."""
    buf = bytearray(data)
    model = _load(buf)
    refs = _find_head(model)
    sg = model.Subgraphs(0)
    w_t, w_scale, _ = _tensor_info(model, refs.weights)
    shape = tuple(int(s) for s in w_t.ShapeAsNumpy())
    if shape != head.weights.shape:
        raise ModelError(f"head shape {head.weights.shape} does not match the model's {shape}")
    if len(w_scale) != head.num_classes:
        raise ModelError("the model's head is quantized per tensor; fedtiny needs per-channel weight scales")
    _, in_scale, in_zp = _tensor_info(model, refs.input)
    if np.float32(in_scale[0]) != np.float32(head.input_scale) or int(in_zp[0]) != head.input_zero_point:
        raise ModelError("the head's input quantization differs from the backbone's feature quantization")
    _buffer_view(model, w_t, np.int8)[:] = head.weights.reshape(-1)
    _buffer_view(model, sg.Tensors(refs.bias), np.int32)[:] = head.bias
    w_scale[:] = head.weight_scales
    _, out_scale, out_zp = _tensor_info(model, refs.output)
    out_scale[:] = head.output_scale
    out_zp[:] = head.output_zero_point
    return bytes(buf)


@_parsing
def with_feature_output(data: bytes | bytearray) -> bytes:
    """A copy of the model whose outputs are (logits, int8 features): one invoke gives both."""
    model = fb.ModelT.InitFromObj(_load(data))
    refs = _find_head(_load(data))
    sg = model.subgraphs[0]
    sg.outputs = np.array([int(sg.outputs[0]), refs.input], dtype=np.int32)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())



@_parsing
def head_submodel(data: bytes | bytearray) -> bytes:
    """The head alone as a model: int8 features in, int8 logits out (to test the head on any features)."""
    model = fb.ModelT.InitFromObj(_load(data))
    refs = _find_head(_load(data))
    sg = model.subgraphs[0]
    sg.operators = [sg.operators[refs.op_index]]
    sg.inputs = np.array([refs.input], dtype=np.int32)
    sg.outputs = np.array([refs.output], dtype=np.int32)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
