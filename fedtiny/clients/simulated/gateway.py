"""The work of one simulated gateway: train or evaluate its devices with the on-device spec, vectorized.

Pure numpy + the on-device spec + memory-mapped fleet data (no TensorFlow, no Flower): the Flower ClientApp
(fedtiny/clients/simulated/app.py) and the in-process engine both call :func:`handle`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtiny.fleet.boards import get_board
from fedtiny.fleet.data import FleetData, uniform
from fedtiny.fleet.labels import LabelSchedule, LabelView, fleet_schedule, label_view
from fedtiny.fleet.recorded import open_fleet_data
from fedtiny.fleet.ring import CacheRows
from fedtiny.ondevice import Int8Head, TrainConfig, TrainJob, dequantize_head, train_heads_fixed
from fedtiny.ondevice.fast import HAVE_NUMBA, train_pooled, train_pooled_sums
from fedtiny.records import GatewayInstruction, encode_int8_delta
from fedtiny.server.partial import (
    LABEL_COUNTS,
    LABEL_DEVICES,
    LABEL_PER_DEVICE,
    empty_sums,
    merge,
    reduce_updates,
    sums_from_verdicts,
)

_DATA: dict[str, FleetData] = {}
_ROWS: dict[str, CacheRows] = {}


def fleet_data(path: str) -> FleetData:
    """One memory-mapped view per worker process (Ray reuses workers across rounds)."""
    if path not in _DATA:
        _DATA[path] = open_fleet_data(Path(path))
    return _DATA[path]


def cache_rows(data: FleetData) -> CacheRows:
    """The devices' cache rows this worker process keeps between rounds (fedtiny/fleet/ring.py)."""
    key = str(data.root)
    if key not in _ROWS or _ROWS[key].data is not data:
        _ROWS[key] = CacheRows(data)
    return _ROWS[key]


_LABELS: dict[str, LabelSchedule | None] = {}


def caches(
    data: FleetData, devices: np.ndarray, round_: int, head: Int8Head
) -> tuple[np.ndarray, np.ndarray, LabelView | None]:
    """Each device's cache rows [K, N] and count [K]; with partial labels (fedtiny/fleet/labels.py) its
    training set instead (the labelled and pseudo-labelled slots first) and the labels and weights to use."""
    idx, _ = cache_rows(data).indices(devices, round_)
    counts = data.cache_counts(devices, round_)
    key = str(data.root)
    if key not in _LABELS:
        _LABELS[key] = fleet_schedule(data, head.num_classes)
    sched = _LABELS[key]
    if sched is None:
        return idx, counts, None
    view = label_view(sched, data, devices, round_, idx, counts, head)
    return view.idx, view.counts, view


def _fixed_point_devices(data: FleetData, devices: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Devices on boards without an FPU, when the request is plain SGD (all the integer trainer does);
    with momentum, weight decay or FedProx such boards run the float32 path in software."""
    if cfg.momentum or cfg.weight_decay or cfg.prox_mu:
        return np.zeros(len(devices), dtype=bool)
    no_fpu = np.array([not get_board(b).fpu for b in data.meta["boards"]], dtype=bool)
    return no_fpu[np.asarray(data.board[devices], dtype=np.int64)]


def inject_faults(
    w: np.ndarray,
    b: np.ndarray,
    w0: np.ndarray,
    b0: np.ndarray,
    bad: np.ndarray,
    kind: str,
    seed: int,
    round_: int,
    devices: np.ndarray,
) -> None:
    """What a faulty or poisoned device sends instead of its honest update (in place)."""
    if not bad.any():
        return
    if kind == "nan":
        w[bad] = np.nan
    elif kind == "inf":
        b[bad] = np.inf
    elif kind == "scale":  # a bit flip in an exponent: absurd norm
        w[bad] = w0 + 1e6 * (w[bad] - w0)
    elif kind == "sign_flip":  # poisoning with a plausible norm
        w[bad] = w0 - 5.0 * (w[bad] - w0)
        b[bad] = b0 - 5.0 * (b[bad] - b0)
    elif kind == "noise":
        u = uniform(seed, 0xBAD, devices[bad][:, None], round_ * 1_000_003 + np.arange(w[0].size)[None, :])
        w[bad] = w0 + (u.reshape(-1, *w.shape[1:]).astype(np.float32) - 0.5) * 2.0


def train_devices(
    head: Int8Head,
    data: FleetData,
    devices: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    round_: int,
    uplink: str = "float32",
) -> dict[str, np.ndarray]:
    """Every device starts from the int8 head it holds, trains on its ring-buffer cache, returns its head.

    The caches are pool rows (int32 indices into the memory-mapped pool); the compiled trainer gathers them
    itself, so no [K, N, D] feature copy is made (only the few devices of boards without an FPU gather theirs).
    """
    idx, counts, view = caches(data, devices, round_, head)
    all_devices = devices.astype(np.int64)
    if view is not None:  # a device with nothing to train on answers no update (a board: CACHE_EMPTY)
        has = counts > 0
        devices, idx, counts = devices[has], idx[has], counts[has]
    fh = dequantize_head(head)
    res = train_pooled(
        fh.weights,
        fh.bias,
        data.pool2d,
        data.flat_labels,
        idx,
        counts,
        _job(cfg, head, devices, seed, round_, view, has if view is not None else None),
        slot_labels=view.labels[has] if view is not None else None,
    )
    fixed = _fixed_point_devices(data, devices, cfg)
    if fixed.any():  # boards without an FPU run the integer trainer (docs/ondevice.md §3b), as they would
        feats, labels = data.gather(idx[fixed])
        if view is not None:
            labels = view.labels[has][fixed]
        sub = np.flatnonzero(has)[fixed] if view is not None else None
        fx = train_heads_fixed(
            fh.weights,
            fh.bias,
            feats,
            labels.astype(np.int64),
            counts[fixed],
            _job(cfg, head, devices[fixed], seed, round_, view, sub),
        )
        res.weights[fixed], res.bias[fixed], res.loss[fixed] = fx.weights, fx.bias, fx.loss
    w, b = res.weights, res.bias
    inject_faults(
        w,
        b,
        fh.weights,
        fh.bias,
        np.asarray(data.faulty[devices], dtype=bool),
        str(data.meta["fault"]),
        seed,
        round_,
        devices,
    )
    out = {"device_ids": devices.astype(np.int64), "num_examples": counts.astype(np.int64), "loss": res.loss}
    if view is not None:
        out[LABEL_COUNTS] = view.tally.as_array()
        out[LABEL_DEVICES], out[LABEL_PER_DEVICE] = all_devices, view.per_device
    if uplink == "int8":
        q, sc = encode_int8_delta(w - fh.weights[None])
        out.update(delta_q=q, delta_scale=sc, bias=b)
    else:
        out.update(weights=w, bias=b)
    return out


def _job(
    cfg: TrainConfig,
    head: Int8Head,
    devices: np.ndarray,
    seed: int,
    round_: int,
    view: LabelView | None,
    rows: np.ndarray | None,
) -> TrainJob:
    """The trainers' job for ``devices``; with pseudo-labels, their weights (rows ``rows`` of the view)."""
    weights = (
        view.weights[rows] if view is not None and view.weights is not None and rows is not None else None
    )
    return TrainJob(
        cfg,
        device_ids=devices,
        seed=seed,
        round_=round_,
        input_scale=head.input_scale,
        input_zero_point=head.input_zero_point,
        sample_weights=weights,
    )


def evaluate_devices(
    head: Int8Head, data: FleetData, segment: int, devices: np.ndarray
) -> dict[str, np.ndarray]:
    """Correct predictions of the deployed int8 head on each device's local test data."""
    feats, labels = data.gather(data.test_indices(devices, segment))
    pred = data.predict(head, feats)
    return {
        "device_ids": devices.astype(np.int64),
        "correct": (pred == labels).sum(axis=1).astype(np.int64),
        "total": data.test_counts(devices),
    }


#: devices trained at once by a gateway that sends partial sums: 65,536 heads of 64 x 10 are 168 MB
REDUCE_CHUNK = 65_536


def sum_devices(
    head: Int8Head, data: FleetData, devices: np.ndarray, cfg: GatewayInstruction
) -> list[dict[str, np.ndarray]]:
    """Partial sums (fedtiny/server/partial.py) of ``devices``: honest devices on a float32 uplink trained,
    checked and summed inside the compiled kernel (no per-device head is written); faulty devices, boards that
    run the integer trainer and an int8 uplink through :func:`train_devices` and
    :func:`fedtiny.server.partial.reduce_updates`. The same checks and the same sums either way (up to float64
    summation order)."""
    tc, seed, round_ = cfg.train, cfg.seed, cfg.round
    uplink, max_norm, clip = cfg.uplink, cfg.max_norm, cfg.clip_norm
    if HAVE_NUMBA and uplink == "float32":
        fused = ~np.asarray(data.faulty[devices], dtype=bool) & ~_fixed_point_devices(data, devices, tc)
    else:
        fused = np.zeros(len(devices), dtype=bool)
    out = []
    if fused.any():
        devs = devices[fused] if not fused.all() else devices
        idx, counts, view = caches(data, devs, round_, head)
        all_devs = devs.astype(np.int64)
        has = counts > 0 if view is not None else None
        if has is not None:  # a device with nothing to train on sends no update
            devs, idx, counts = devs[has], idx[has], counts[has]
        g = dequantize_head(head)
        res = train_pooled_sums(
            g.weights,
            g.bias,
            data.pool2d,
            data.flat_labels,
            idx,
            counts,
            _job(tc, head, devs, seed, round_, view, has),
            slot_labels=view.labels[has] if view is not None else None,
            example_weights=counts.astype(np.float64),
            max_norm=max_norm,
            clip_norm=clip,
        )
        part = sums_from_verdicts(res.sum_w, res.sum_b, counts, res.loss, devs, res.verdict)
        if view is not None:
            part[LABEL_COUNTS] = view.tally.as_array()
            part[LABEL_DEVICES], part[LABEL_PER_DEVICE] = all_devs, view.per_device
        out.append(part)
    if not fused.all():
        rest = devices[~fused]
        upd = train_devices(head, data, rest, tc, seed, round_)
        g = dequantize_head(head)
        part = reduce_updates(
            upd["weights"],
            upd["bias"],
            upd["num_examples"],
            upd["loss"],
            upd["device_ids"],
            g,
            max_norm,
            clip,
            uplink,
        )
        for key in (LABEL_COUNTS, LABEL_DEVICES, LABEL_PER_DEVICE):
            if key in upd:
                part[key] = upd[key]
        out.append(part)
    return out


def handle(kind: str, head: Int8Head, cfg: GatewayInstruction, devices: np.ndarray) -> dict[str, np.ndarray]:
    """One gateway message: ``train`` → per-device heads, or this gateway's partial sums when the config asks
    for them (``reduce``); ``evaluate`` → per-device correct counts."""
    data = fleet_data(cfg.fleet_dir)
    devices = np.asarray(devices, dtype=np.int64)
    if kind == "train":
        if not cfg.reduce:
            return train_devices(head, data, devices, cfg.train, cfg.seed, cfg.round, cfg.uplink)
        # the strategy reads only the weighted mean: this gateway's partial sums, its devices trained in
        # chunks of REDUCE_CHUNK so that its memory does not grow with the fleet
        sums = []
        for lo in range(0, len(devices), REDUCE_CHUNK):
            sums.extend(sum_devices(head, data, devices[lo : lo + REDUCE_CHUNK], cfg))
        return merge(sums) if sums else merge([empty_sums(dequantize_head(head))])
    return evaluate_devices(head, data, cfg.segment, devices)
