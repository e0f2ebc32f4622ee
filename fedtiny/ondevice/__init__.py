"""The on-device numeric spec: exactly what a board computes (docs/ondevice.md).

numpy only (never TensorFlow): this module runs in Ray workers and is the reference the C firmware's
golden vectors come from.
"""

from fedtiny.ondevice.budget import DeviceBudget, device_budget
from fedtiny.ondevice.cache import FeatureCache
from fedtiny.ondevice.fixed import train_heads_fixed
from fedtiny.ondevice.head import (
    FloatHead,
    Int8Head,
    dequantize_head,
    dequantized_features,
    head_accumulators,
    head_forward_int8,
    logit_range_to_qparams,
    predict_int8,
    quantize_head,
    quantize_weights,
)
from fedtiny.ondevice.quant import channel_multipliers, dequantize, quantize, quantize_multiplier
from fedtiny.ondevice.shuffle import mix64, sample_order, stream_key
from fedtiny.ondevice.train import TrainConfig, TrainJob, TrainResult, train_heads

__all__ = [
    "DeviceBudget",
    "FeatureCache",
    "FloatHead",
    "Int8Head",
    "TrainConfig",
    "TrainJob",
    "TrainResult",
    "channel_multipliers",
    "dequantize",
    "dequantize_head",
    "dequantized_features",
    "device_budget",
    "head_accumulators",
    "head_forward_int8",
    "logit_range_to_qparams",
    "mix64",
    "predict_int8",
    "quantize",
    "quantize_head",
    "quantize_multiplier",
    "quantize_weights",
    "sample_order",
    "stream_key",
    "train_heads",
    "train_heads_fixed",
]
