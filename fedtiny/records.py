"""What travels in Flower messages between the server and gateways: int8 heads down, device heads up.

The simulation's instruction to a gateway is :class:`GatewayInstruction` (fedtiny/server/fleet_server.py ->
fedtiny/clients/simulated), with its one ``to_config()`` / ``from_config()`` pair. The field trial's messages (fedtiny/field/server.py <-> fedtiny/clients/gateway/app.py) are dataclasses here,
each with its one ``to_record()`` / ``from_record()`` pair: ``RoundInstruction`` (a train or evaluate message
down), ``GatewayReply`` (its reply up, one ``BoardReport`` per board) and ``TrialEnd`` (the query that ends a
trial).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtiny.ondevice.head import Int8Head
from fedtiny.ondevice.train import TrainConfig


@dataclass(frozen=True)
class GatewayInstruction:
    """What a simulated gateway needs for a train or evaluate message besides the head and its devices."""

    round: int
    segment: int
    seed: int
    fleet_dir: str
    train: TrainConfig
    uplink: str = "float32"  # device update encoding: "float32" or "int8"
    reduce: bool = False  # reply this gateway's partial sums instead of per-device heads
    max_norm: float = 1e3  # updates above this L2 norm are rejected (partial sums)
    clip_norm: float = 0.0  # fedtiny's clipping of each update (partial sums; 0 = off)

    def to_config(self) -> ConfigRecord:
        """Flower's ConfigRecord of this instruction (kebab-case keys)."""
        t = self.train
        return ConfigRecord(
            {
                "round": self.round,
                "segment": self.segment,
                "seed": self.seed,
                "fleet-dir": self.fleet_dir,
                "epochs": t.epochs,
                "batch-size": t.batch_size,
                "lr": t.lr,
                "momentum": t.momentum,
                "weight-decay": t.weight_decay,
                "prox-mu": t.prox_mu,
                "uplink": self.uplink,
                "reduce": int(self.reduce),
                "max-norm": self.max_norm,
                "clip-norm": self.clip_norm,
            }
        )

    @classmethod
    def from_config(cls, cfg: Mapping[str, object]) -> GatewayInstruction:
        def num(key: str) -> float:
            v = cfg[key]
            if not isinstance(v, (int, float)):
                raise ValueError(f"gateway instruction: {key!r} = {v!r} is not a number")
            return float(v)

        return cls(
            round=int(num("round")),
            segment=int(num("segment")),
            seed=int(num("seed")),
            fleet_dir=str(cfg["fleet-dir"]),
            train=TrainConfig(
                epochs=int(num("epochs")),
                batch_size=int(num("batch-size")),
                lr=num("lr"),
                momentum=num("momentum"),
                weight_decay=num("weight-decay"),
                prox_mu=num("prox-mu"),
            ),
            uplink=str(cfg.get("uplink", "float32")),
            reduce=bool(int(num("reduce"))) if "reduce" in cfg else False,
            max_norm=num("max-norm"),
            clip_norm=num("clip-norm"),
        )


def head_to_record(head: Int8Head) -> ArrayRecord:
    """The int8 head patch a board receives (weights, scales, bias, quantization)."""
    q = np.array(
        [head.input_scale, head.input_zero_point, head.output_scale, head.output_zero_point], dtype=np.float64
    )
    return ArrayRecord(
        {
            "weights": Array(head.weights),
            "weight_scales": Array(head.weight_scales),
            "bias": Array(head.bias),
            "qparams": Array(q),
        }
    )


def head_from_record(rec: ArrayRecord) -> Int8Head:
    q = rec["qparams"].numpy()
    return Int8Head(
        rec["weights"].numpy(),
        rec["weight_scales"].numpy(),
        rec["bias"].numpy(),
        float(q[0]),
        int(q[1]),
        float(q[2]),
        int(q[3]),
    )


def arrays_to_record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def record_to_arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: rec[k].numpy() for k in rec}


def head_patch_bytes(head: Int8Head) -> int:
    """Bytes of a head patch (docs/protocol.md HeadPatch): 20-byte header, float32 scales, int32 bias, int8 weights."""
    return int(20 + 8 * head.num_classes + head.weights.size)


def float_update_bytes(num_classes: int, dim: int) -> int:
    """Bytes of one device's float32 head update plus its count and loss."""
    return 4 * num_classes * (dim + 1) + 8


def encode_int8_delta(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 of ``delta`` [K, C, D]: (int8 [K, C, D], float32 scales [K, C])."""
    a = np.abs(delta).max(axis=2)
    # a non-finite row keeps a NaN scale, so that the server rejects it (int8 codes cannot carry NaN/Inf)
    scale = np.where(np.isfinite(a), np.where(a > 0, a / 127.0, 1.0), np.nan).astype(np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.round(delta / scale[..., None]), -127, 127)
    return np.nan_to_num(q).astype(np.int8), scale


def decode_int8_delta(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_int8_delta`; a NaN scale (non-finite update) gives a NaN row."""
    row: np.ndarray = q.astype(np.float32) * scale[..., None]
    return row


# ----- the field trial's messages -----


def _num(cfg: ConfigRecord, key: str) -> float:
    value = cfg[key]
    if not isinstance(value, (int, float)):
        raise TypeError(f"config '{key}' must be a number, got {value!r}")
    return value


def _ints(cfg: ConfigRecord, key: str) -> list[int]:
    value = cfg.get(key, [])
    return [int(v) for v in value] if isinstance(value, list) else []


def _strs(cfg: ConfigRecord, key: str) -> list[str]:
    value = cfg.get(key, [])
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class RoundInstruction:
    """Server -> field gateway, message type ``train`` or ``evaluate``: the global head, the golden self-test
    features, the training hyper-parameters and the updates the server already has (``acks``: device id ->
    update id; the boards may forget them). ``last``: the trial's last message (the gateway stops after it);
    ``signed_image``: the head as a signed MCUboot image (``fedtiny serve --signing-key``), forwarded as is;
    ``sampled``: the device ids that train in this round (``strategy.fraction``; None: every board)."""

    round: int
    segment: int
    seed: int
    train: TrainConfig
    head: Int8Head
    golden: np.ndarray  # int8 features [n, D]
    acks: dict[int, int] = field(default_factory=dict)
    last: bool = False
    signed_image: bytes | None = None
    sampled: list[int] | None = None

    def to_record(self) -> RecordDict:
        cfg = ConfigRecord(
            {
                "round": int(self.round),
                "segment": int(self.segment),
                "seed": int(self.seed),
                "epochs": int(self.train.epochs),
                "batch-size": int(self.train.batch_size),
                "lr": self.train.lr,
                "momentum": self.train.momentum,
                "weight-decay": self.train.weight_decay,
                "prox-mu": self.train.prox_mu,
                "ack-devices": [int(d) for d in self.acks] or [-1],  # a record list is never empty: -1 pads
                "ack-updates": [int(u) for u in self.acks.values()] or [-1],
                "last": bool(self.last),
            }
        )
        if self.sampled is not None:  # a record list is never empty: -1 pads
            cfg["sampled"] = [int(d) for d in self.sampled] or [-1]
        content = RecordDict(
            {
                "head": head_to_record(self.head),
                "golden": ArrayRecord({"features": Array(np.ascontiguousarray(self.golden))}),
                "config": cfg,
            }
        )
        if self.signed_image is not None:
            content["signed"] = ArrayRecord({"image": Array(np.frombuffer(self.signed_image, np.uint8))})
        return content

    @classmethod
    def from_record(cls, content: RecordDict) -> RoundInstruction:
        """TypeError naming the key if a number is not one; KeyError if a record is missing."""
        cfg = content.config_records["config"]
        signed = content.array_records.get("signed")
        acks = dict(zip(_ints(cfg, "ack-devices"), _ints(cfg, "ack-updates")))
        return cls(
            round=int(_num(cfg, "round")),
            segment=int(_num(cfg, "segment")),
            seed=int(_num(cfg, "seed")),
            train=TrainConfig(
                epochs=int(_num(cfg, "epochs")),
                batch_size=int(_num(cfg, "batch-size")),
                lr=_num(cfg, "lr"),
                momentum=_num(cfg, "momentum"),
                weight_decay=_num(cfg, "weight-decay"),
                prox_mu=_num(cfg, "prox-mu"),
            ),
            head=head_from_record(content.array_records["head"]),
            golden=content.array_records["golden"]["features"].numpy(),
            acks={d: u for d, u in acks.items() if d >= 0},
            last=bool(cfg.get("last", False)),
            signed_image=signed["image"].numpy().astype(np.uint8).tobytes() if signed is not None else None,
            sampled=[d for d in _ints(cfg, "sampled") if d >= 0] if "sampled" in cfg else None,
        )


@dataclass(frozen=True)
class BoardReport:
    """One board's outcome of a gateway message: its link URI, device id (-1: not reached), error ("" = ok)."""

    uri: str
    device_id: int = -1
    error: str = ""
    status: str = ""  # the board's status name when it answered an error (e.g. AUTH_FAILED), "" otherwise


@dataclass(frozen=True)
class GatewayReply:
    """Field gateway -> server, the reply to a ``RoundInstruction``: the results (train: ``device_ids``,
    ``update_ids``, ``rounds``, ``num_examples``, ``loss``, ``weights``, ``bias``; evaluate: ``device_ids``,
    ``correct``, ``total``) and every board's report, reached or not."""

    results: dict[str, np.ndarray]
    boards: list[BoardReport] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [b.error for b in self.boards if b.error]

    def to_record(self) -> RecordDict:
        info = ConfigRecord(
            {
                "errors": self.errors or [""],
                "boards": len(self.boards),
                "board-uris": [b.uri for b in self.boards] or [""],
                "board-ids": [int(b.device_id) for b in self.boards] or [-2],
                "board-errors": [b.error for b in self.boards] or [""],
                "board-status": [b.status for b in self.boards] or [""],
            }
        )
        return RecordDict({"results": arrays_to_record(**self.results), "info": info})

    @classmethod
    def from_record(cls, content: RecordDict) -> GatewayReply:
        info = content.config_records["info"]
        uris, ids, errs = _strs(info, "board-uris"), _ints(info, "board-ids"), _strs(info, "board-errors")
        status = _strs(info, "board-status") if "board-status" in info else []
        status += [""] * (len(uris) - len(status))  # a gateway of an earlier version sends none
        boards = [BoardReport(u, d, e, st) for u, d, e, st in zip(uris, ids, errs, status) if u]  # "" pads
        return cls(record_to_arrays(content.array_records["results"]), boards)


@dataclass(frozen=True)
class TrialEnd:
    """Server -> field gateway, message type ``query``: the trial is over (``fedtiny gateway`` then stops)."""

    summary: str = ""

    def to_record(self) -> RecordDict:
        return RecordDict({"config": ConfigRecord({"end": True, "summary": self.summary})})

    @classmethod
    def from_record(cls, content: RecordDict) -> TrialEnd | None:
        """The end of the trial, or None for a plain query."""
        cfg = content.config_records.get("config")
        if cfg is None or not cfg.get("end"):
            return None
        return cls(str(cfg.get("summary", "")))
