"""Golden vectors for the C int8 interpreter (firmware/core/ft_tfl_*): small int8 models built with the TF
converter (sweeping shapes, strides, padding, dilation, depth multipliers, groups, activations and
quantization parameters) plus fedtiny's reference models, run in TFLite Micro (the pip ``tflite-micro``
runtime) with every tensor preserved. The bundle holds, per model: the .tflite bytes, TFLite Micro's
smallest arena, the input, and every non-constant tensor after invoke, which firmware/tests/test_tfl.c
compares with its own, bit for bit, layer by layer.

    python scripts/gen_tfl_golden.py --out DIR [--quick] [--no-fedtiny]

writes DIR/tfl_golden.bin (read by the host test binary) and DIR/tfl_golden_data.h (the same bytes as a C
array, compiled into the QEMU test image). Nothing is committed: tests/test_firmware_tfl.py generates it
into the build directory (cached by a hash of this file and the TensorFlow version).

Bundle layout (little-endian): "FTGB", u32 version=1, u32 cases; per case: u16 name length, name, u32 model
length, model, u32 TFLM arena bytes, u32 inputs, per input (u32 length, bytes), u32 tensors, per tensor
(u32 index, u32 length, bytes).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _convert(model: Any, rep: np.ndarray, *, float_io: bool = False, per_tensor: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    if per_tensor:
        conv._experimental_disable_per_channel = True  # per-tensor weight scales (older converters' layout)
    return bytes(conv.convert())


def synthetic_cases(quick: bool) -> list[tuple[str, Callable[[Any], Any], tuple[int, ...], dict[str, Any]]]:
    """(name, builder, input shape, options): options scale/offset the representative data (quantization
    parameters), pick float I/O (QUANTIZE/DEQUANTIZE) or per-tensor weights."""
    import keras

    L = keras.layers

    def conv_chain(inp: Any) -> Any:
        x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
        x = L.Conv2D(6, (3, 2), strides=2, padding="valid")(x)
        x = L.Conv2D(5, 1, activation="relu6")(x)
        x = L.Conv2D(4, 3, dilation_rate=2, padding="same")(x)
        x = L.Conv2D(7, (2, 3), strides=(2, 1), padding="same", use_bias=False)(x)
        return L.Conv2D(3, (1, 3), strides=(1, 3), padding="valid")(x)

    def conv_odd(inp: Any) -> Any:
        x = L.Conv2D(4, 5, strides=3, padding="same", use_bias=False)(inp)
        x = L.Conv2D(9, 2, strides=2, padding="same", activation="relu")(x)
        return L.Conv2D(2, (2, 1), dilation_rate=(1, 2), padding="valid")(x)

    def conv_groups(inp: Any) -> Any:
        x = L.Conv2D(8, 3, padding="same", groups=2, activation="relu")(inp)
        return L.Conv2D(4, 1, groups=4)(x)

    def dw_chain(inp: Any) -> Any:
        x = L.DepthwiseConv2D(3, padding="same", activation="relu")(inp)
        x = L.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2)(x)
        x = L.DepthwiseConv2D((2, 3), padding="same", depth_multiplier=3, activation="relu6")(x)
        x = L.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False)(x)
        return L.DepthwiseConv2D((3, 2), strides=(1, 2), padding="same")(x)

    def pools(inp: Any) -> Any:
        x = L.Conv2D(6, 3, padding="same")(inp)
        a = L.AveragePooling2D(2)(x)
        a = L.AveragePooling2D(3, strides=2, padding="same")(a)
        m = L.MaxPooling2D(2)(x)
        m = L.MaxPooling2D((3, 2), strides=(2, 1), padding="same")(m)
        m = L.AveragePooling2D((2, 3), strides=(1, 2), padding="valid")(m)
        a = L.MaxPooling2D(3, strides=1, padding="same")(a)
        return a, m  # two graph outputs

    def residual(inp: Any) -> Any:
        x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
        y = L.Conv2D(8, 3, padding="same")(x)
        x = L.ReLU()(L.Add()([x, y]))
        z = L.Conv2D(8, 1)(x)
        x = L.Add()([x, z])
        g = keras.ops.mean(x, axis=[1, 2], keepdims=True)
        x = L.Add()([x, g])  # broadcast ADD + MEAN keep_dims
        c = keras.ops.mean(x, axis=3, keepdims=True)  # MEAN over channels
        return L.Add()([x, c])

    def pad_mean(inp: Any) -> Any:
        x = L.ZeroPadding2D(((1, 2), (0, 3)))(inp)
        x = L.Conv2D(5, 3, padding="valid")(x)
        x = L.ZeroPadding2D(1)(x)
        x = L.GlobalAveragePooling2D()(x)
        return L.Dense(7)(x)

    def head(inp: Any) -> Any:
        x = L.Reshape((-1,))(inp)
        x = L.Dense(24, activation="relu")(x)
        x = L.Dense(10)(x)
        return L.Softmax()(x)

    def head2(inp: Any) -> Any:
        x = L.Dense(16)(inp)  # FC on a 3-D input: batches = 1 x 5
        x = L.Reshape((80,))(x)
        x = L.Dense(33, activation="relu6")(x)
        return L.Softmax()(L.Dense(5)(x))

    def tanh(inp: Any) -> Any:  # an op the firmware lacks: refused at verify, naming TANH
        return L.Dense(4, activation="tanh")(L.Reshape((-1,))(inp))

    cases: list[tuple[str, Any, tuple[int, ...], dict[str, Any]]] = [
        ("conv_chain", conv_chain, (12, 12, 3), {}),
        ("conv_chain_pertensor", conv_chain, (12, 12, 3), {"per_tensor": True, "scale": 3.0, "offset": 1.0}),
        ("conv_odd", conv_odd, (11, 7, 2), {"scale": 0.2, "offset": -0.5}),
        ("conv_groups", conv_groups, (6, 6, 4), {}),
        ("dw_chain", dw_chain, (10, 9, 3), {"offset": 2.0}),
        ("pools", pools, (12, 10, 3), {}),
        ("residual", residual, (8, 8, 3), {}),
        ("pad_mean", pad_mean, (7, 6, 2), {"scale": 5.0}),
        ("head_softmax", head, (4, 4, 4), {}),
        ("head_float_io", head, (4, 4, 4), {"float_io": True, "scale": 0.5, "offset": 3.0}),
        ("fc3d_softmax", head2, (5, 8), {"offset": -1.0}),
        ("refuse_tanh", tanh, (3, 3, 2), {}),
    ]
    if quick:
        cases = [
            c for c in cases if c[0] in ("conv_chain", "dw_chain", "residual", "head_float_io", "refuse_tanh")
        ]
    return cases


def _keras_model(fn: Callable[[Any], Any], shape: tuple[int, ...]) -> Any:
    import keras

    inp = keras.Input(shape=shape, batch_size=1)
    out = fn(inp)
    return keras.Model(inp, list(out) if isinstance(out, tuple) else out)


def _randomize(model: Any, rng: np.random.Generator) -> None:
    """Random weights with some spread (fresh Keras init leaves biases 0 and BN at identity)."""
    ws = []
    for var, w in zip(model.weights, model.get_weights(), strict=True):
        if "variance" in var.path:  # BatchNormalization: a variance must stay positive
            ws.append(rng.uniform(0.5, 2.0, w.shape).astype(w.dtype))
        elif w.ndim == 1:
            ws.append(rng.normal(0.0, 0.3, w.shape).astype(w.dtype))
        else:
            fan_in = int(np.prod(w.shape[:-1])) or 1
            ws.append(rng.normal(0.0, 1.5 / np.sqrt(fan_in), w.shape).astype(w.dtype))
    model.set_weights(ws)


def fedtiny_cases() -> list[tuple[str, Any, np.ndarray]]:
    from fedtiny.tasks import get_task

    out = []
    for name in ("vibration", "digits", "kws"):
        task = get_task(name)
        model = task.build_model(head_inputs=32 if name == "kws" else 64)
        rng = np.random.default_rng(7)
        labels = rng.integers(0, len(task.classes), 48)
        rep = np.asarray(task.generate(labels, rng, task.default_condition()), np.float32)
        out.append((f"fedtiny_{name}", model, rep))
    return out


def tensor_table(model: bytes) -> list[tuple[int, bool]]:
    """(index, is_constant) for each tensor of subgraph 0."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    m = fb.Model.GetRootAsModel(model, 0)
    sg = m.Subgraphs(0)
    res = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = m.Buffers(t.Buffer())
        res.append((i, buf is not None and buf.DataLength() > 0))
    return res


def run_tflm(model: bytes, x: np.ndarray) -> dict[int, np.ndarray]:
    from tflite_micro.python.tflite_micro import runtime as tflm

    it = tflm.Interpreter.from_bytes(
        model, arena_size=4 << 20, intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors
    )
    it.set_input(x, 0)
    it.invoke()
    out = {}
    for idx, const in tensor_table(model):
        if not const:
            out[idx] = np.asarray(it.GetTensor(idx, 0)["tensor_data"])
    return out


def make_case(name: str, model: bytes, rep: np.ndarray, rng: np.random.Generator) -> bytes:
    from tflite_micro.python.tflite_micro import runtime as tflm

    from fedtiny.model.info import min_arena_bytes

    it = tflm.Interpreter.from_bytes(model, arena_size=4 << 20)
    det = it.get_input_details(0)
    x = rep[rng.integers(0, len(rep))][None]
    if det["dtype"] == np.int8:
        scale, zp = (
            det["quantization_parameters"]["scales"][0],
            det["quantization_parameters"]["zero_points"][0],
        )
        x = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
    else:
        x = x.astype(np.float32)
    x = x.reshape(det["shape"])
    tensors = {} if name.startswith("refuse_") else run_tflm(model, x)
    arena = min_arena_bytes(model)
    nb = name.encode()
    parts = [struct.pack("<H", len(nb)), nb, struct.pack("<I", len(model)), model, struct.pack("<I", arena)]
    xb = np.ascontiguousarray(x).tobytes()
    parts += [struct.pack("<I", 1), struct.pack("<I", len(xb)), xb, struct.pack("<I", len(tensors))]
    for idx, arr in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        parts += [struct.pack("<II", idx, len(b)), b]
    return b"".join(parts)


def build_bundle(quick: bool = False, with_fedtiny: bool = True, log: Callable[[str], None] = print) -> bytes:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1234)
    tf.config.experimental.enable_op_determinism()
    cases = []
    for i, (name, fn, shape, opt) in enumerate(synthetic_cases(quick)):
        rng = np.random.default_rng([11, i])
        model = _keras_model(fn, shape)
        _randomize(model, rng)
        rep = (rng.normal(0.0, 1.0, (24, *shape)) * opt.get("scale", 1.0) + opt.get("offset", 0.0)).astype(
            np.float32
        )
        tfl = _convert(
            model, rep, float_io=opt.get("float_io", False), per_tensor=opt.get("per_tensor", False)
        )
        cases.append(make_case(name, tfl, rep, rng))
        log(f"{name}: {len(tfl)} bytes")
    if with_fedtiny and not quick:
        for i, (name, model, rep) in enumerate(fedtiny_cases()):
            rng = np.random.default_rng([13, i])
            _randomize(model, rng)
            tfl = _convert(model, rep)
            cases.append(make_case(name, tfl, rep, rng))
            log(f"{name}: {len(tfl)} bytes")
    return b"FTGB" + struct.pack("<II", 1, len(cases)) + b"".join(cases)


def c_array(data: bytes) -> str:
    lines = [
        "/* generated by scripts/gen_tfl_golden.py: do not edit */",
        "#include <stdint.h>",
        f"static const uint32_t tfl_golden_len = {len(data)}u;",
        "static const uint8_t tfl_golden_data[] = {",
    ]
    for i in range(0, len(data), 24):
        lines.append("    " + ",".join(str(b) for b in data[i : i + 24]) + ",")
    lines.append("};")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="a few synthetic models only")
    ap.add_argument("--no-fedtiny", action="store_true", help="skip fedtiny's reference models")
    args = ap.parse_args()
    data = build_bundle(args.quick, not args.no_fedtiny)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tfl_golden.bin").write_bytes(data)
    (args.out / "tfl_golden_data.h").write_text(c_array(data))
    print(f"{len(data)} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
