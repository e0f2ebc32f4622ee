"""The one list of TFLite builtin operators a fedtiny board runs (issue 21: one registry per extension point).

``FIRMWARE_OPS`` is the registry: one line per op, the builtin code and its schema name. The C firmware's
interpreter takes its op list from it (``scripts/gen_ops.py`` writes ``firmware/core/ft_tfl_op_list.h``; each op's
registration, parse / verify / plan / invoke, is ``ft_op_<name>`` in ``firmware/core/ops/ft_op_<name>.c``), and the
virtual board (``fedtiny.clients.board.tflite_check``) accepts exactly these ops, so both boards refuse the same
models with the same reason. ``BUILTIN_NAMES`` names the other builtin codes in those reasons.

Adding an op: one line here, its C file, then ``python scripts/gen_ops.py`` (docs/design.md, "Adding a C op").
"""

from __future__ import annotations

# (tflite BuiltinOperator code, name): the ops both boards run
FIRMWARE_OPS: tuple[tuple[int, str], ...] = (
    (0, "ADD"),
    (1, "AVERAGE_POOL_2D"),
    (3, "CONV_2D"),
    (4, "DEPTHWISE_CONV_2D"),
    (6, "DEQUANTIZE"),
    (9, "FULLY_CONNECTED"),
    (17, "MAX_POOL_2D"),
    (22, "RESHAPE"),
    (25, "SOFTMAX"),
    (34, "PAD"),
    (40, "MEAN"),
    (60, "PADV2"),
    (114, "QUANTIZE"),
)

# names of the builtin codes a refusal may name (the schema's BuiltinOperator enum; others read "BUILTIN_<code>")
BUILTIN_NAMES: dict[int, str] = {
    **dict(FIRMWARE_OPS),
    2: "CONCATENATION",
    5: "DEPTH_TO_SPACE",
    7: "EMBEDDING_LOOKUP",
    8: "FLOOR",
    11: "L2_NORMALIZATION",
    12: "L2_POOL_2D",
    13: "LOCAL_RESPONSE_NORMALIZATION",
    14: "LOGISTIC",
    16: "LSTM",
    18: "MUL",
    19: "RELU",
    20: "RELU_N1_TO_1",
    21: "RELU6",
    23: "RESIZE_BILINEAR",
    24: "RNN",
    26: "SPACE_TO_DEPTH",
    27: "SVDF",
    28: "TANH",
    32: "CUSTOM",
    36: "GATHER",
    37: "BATCH_TO_SPACE_ND",
    38: "SPACE_TO_BATCH_ND",
    39: "TRANSPOSE",
    41: "SUB",
    42: "DIV",
    43: "SQUEEZE",
    44: "UNIDIRECTIONAL_SEQUENCE_LSTM",
    45: "STRIDED_SLICE",
    47: "EXP",
    49: "SPLIT",
    50: "LOG_SOFTMAX",
    53: "CAST",
    54: "PRELU",
    55: "MAXIMUM",
    56: "ARG_MAX",
    57: "MINIMUM",
    74: "SUM",
    75: "SQRT",
    76: "RSQRT",
    77: "SHAPE",
    79: "ARG_MIN",
    82: "REDUCE_MAX",
    83: "PACK",
    88: "UNPACK",
    97: "RESIZE_NEAREST_NEIGHBOR",
    98: "LEAKY_RELU",
    102: "SPLIT_V",
    117: "HARD_SWISH",
    126: "BATCH_MATMUL",
}

FIRMWARE_CODES: frozenset[int] = frozenset(code for code, _ in FIRMWARE_OPS)

# the reason both boards give for an op they lack (the C interpreter: "op <index> <NAME>: " + this)
NOT_SUPPORTED = "operator not supported by this firmware"


def op_name(code: int) -> str:
    """The schema name of a builtin code ("CONV_2D"), or "BUILTIN_<code>" (the C ft_tfl_op_name)."""
    return BUILTIN_NAMES.get(code, f"BUILTIN_{code}")


def c_registration(name: str) -> str:
    """The C symbol of an op's registration: ft_op_conv_2d."""
    return "ft_op_" + name.lower()


def c_file(name: str) -> str:
    """The op's C source, relative to firmware/core: ops/ft_op_conv_2d.c."""
    return f"ops/{c_registration(name)}.c"
