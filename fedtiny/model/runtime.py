"""Run an int8 .tflite model on the host: TFLite Micro (device-faithful) or LiteRT (faster, ±1 LSB).

Neither imports TensorFlow. Inputs are float (what the board's DSP front end computes) and are quantized
with the model's input scale/zero point exactly as TFLite's QUANTIZE does; a model with a float input gets
them as they are (its own QUANTIZE op quantizes them). int8 inputs are passed through.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import read_tail, with_feature_output
from fedtiny.ondevice.quant import quantize

Backend = Literal["tflm", "litert"]


class Int8Runner:
    """One interpreter over a model with outputs (logits, features). Batch size 1, as on the board."""

    def __init__(self, model: bytes, backend: Backend = "tflm", arena_size: int = 256 * 1024) -> None:
        self.backend = backend
        self._model = with_feature_output(model)
        self._has_tail = len(read_tail(model).ops) > 0
        if backend == "tflm":
            from tflite_micro.python.tflite_micro import runtime as tflm

            self._interp = tflm.Interpreter.from_bytes(self._model, arena_size=arena_size)
            det = self._interp.get_input_details(0)
            q = det["quantization_parameters"]
            self._float_in = np.dtype(det["dtype"]) == np.float32
            if not self._float_in:
                self._in_scale, self._in_zp = float(q["scales"][0]), int(q["zero_points"][0])
            self.input_shape = tuple(int(s) for s in det["shape"])
        elif backend == "litert":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            self._interp = Interpreter(
                model_content=self._model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF
            )
            self._interp.allocate_tensors()
            det = self._interp.get_input_details()[0]
            scale, zero_point = det["quantization"]
            self._in_scale, self._in_zp = float(scale), int(zero_point)
            self._float_in = np.dtype(det["dtype"]) == np.float32
            self.input_shape = tuple(int(s) for s in det["shape"])
            outs = self._interp.get_output_details()
            self._out_idx = [o["index"] for o in outs]
            self._in_idx = det["index"]
        else:
            raise ModelError(f"unknown runtime backend '{backend}'; expected 'tflm' or 'litert'")
        from fedtiny.model.flatbuffer import model_io

        io = model_io(model)
        self._q_scale, self._q_zp = io.input_scale, io.input_zero_point  # the int8 input after any QUANTIZE
        self.float_input = self._float_in
        self.final: list[
            np.ndarray
        ] = []  # the model's own outputs of the last run (when ops follow the head)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """What the interpreter's input tensor takes: int8 for an int8 model, float32 for a float-input one."""
        if self._float_in:
            return np.asarray(x, dtype=np.float32)
        return quantize(x, self._in_scale, self._in_zp)

    def prepare_inputs(self, x: np.ndarray) -> np.ndarray:
        """Model inputs of any kind (float32, or int8 already quantized with the model's input scale) for run_int8."""
        x = np.asarray(x)
        if x.dtype == np.int8:
            if not self._float_in:
                return x
            return ((x.astype(np.float32) - np.float32(self._q_zp)) * np.float32(self._q_scale)).astype(
                np.float32
            )
        return self.quantize_input(np.asarray(x, dtype=np.float32))

    def run_int8(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpreter inputs [n, *shape] (int8, or float32 for a float-input model) → (int8 logits [n, C],
        int8 features [n, D]); the model's own output (after SOFTMAX etc.) is kept in ``self.final``."""
        logits, feats, final = [], [], []
        n_out = 3 if self._has_tail else 2
        for sample in xq:
            one = sample.reshape(self.input_shape)
            if self.backend == "tflm":
                self._interp.set_input(one, 0)
                self._interp.invoke()
                outs = [self._interp.get_output(i) for i in range(n_out)]
            else:
                self._interp.set_tensor(self._in_idx, one)
                self._interp.invoke()
                outs = [self._interp.get_tensor(self._out_idx[i]) for i in range(n_out)]
            logits.append(outs[0].reshape(-1).copy())
            feats.append(outs[1].reshape(-1).copy())
            final.append(outs[-1].reshape(-1).copy() if self._has_tail else logits[-1])
        if not len(logits):
            raise ModelError("no inputs to run")
        self.final = final
        return np.stack(logits).astype(np.int8), np.stack(feats).astype(np.int8)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs [n, *shape] (float, or int8 already quantized) → (int8 logits, int8 features)."""
        return self.run_int8(self.prepare_inputs(x))

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class predictions: argmax of the model's own output (through its SOFTMAX etc.), ties to the lowest."""
        self.run(x)
        classes: np.ndarray = np.argmax(np.stack(self.final), axis=-1)
        return classes
