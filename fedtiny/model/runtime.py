"""Run an int8 .tflite model on the host: TFLite Micro (device-faithful) or LiteRT (faster, ±1 LSB).

Neither imports TensorFlow. Inputs are float (what the board's DSP front end computes) and are quantized
with the model's input scale/zero point exactly as TFLite's QUANTIZE does.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedtiny.errors import ModelError
from fedtiny.model.flatbuffer import with_feature_output
from fedtiny.ondevice.quant import quantize

Backend = Literal["tflm", "litert"]


class Int8Runner:
    """One interpreter over a model with outputs (logits, features). Batch size 1, as on the board."""

    def __init__(self, model: bytes, backend: Backend = "tflm", arena_size: int = 256 * 1024) -> None:
        self.backend = backend
        self._model = with_feature_output(model)
        if backend == "tflm":
            from tflite_micro.python.tflite_micro import runtime as tflm

            self._interp = tflm.Interpreter.from_bytes(self._model, arena_size=arena_size)
            det = self._interp.get_input_details(0)
            q = det["quantization_parameters"]
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
            self.input_shape = tuple(int(s) for s in det["shape"])
            outs = self._interp.get_output_details()
            self._out_idx = [o["index"] for o in outs]
            self._in_idx = det["index"]
        else:
            raise ModelError(f"unknown runtime backend '{backend}'; expected 'tflm' or 'litert'")

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize(x, self._in_scale, self._in_zp)

    def run_int8(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 inputs [n, *shape] → (int8 logits [n, C], int8 features [n, D])."""
        logits, feats = [], []
        for sample in xq:
            one = sample.reshape(self.input_shape)
            if self.backend == "tflm":
                self._interp.set_input(one, 0)
                self._interp.invoke()
                logits.append(self._interp.get_output(0).reshape(-1).copy())
                feats.append(self._interp.get_output(1).reshape(-1).copy())
            else:
                self._interp.set_tensor(self._in_idx, one)
                self._interp.invoke()
                logits.append(self._interp.get_tensor(self._out_idx[0]).reshape(-1).copy())
                feats.append(self._interp.get_tensor(self._out_idx[1]).reshape(-1).copy())
        return np.stack(logits).astype(np.int8), np.stack(feats).astype(np.int8)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float inputs [n, *shape] → (int8 logits, int8 features)."""
        return self.run_int8(self.quantize_input(np.asarray(x, dtype=np.float32)))

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.run(x)[0], axis=-1)
