"""Fixed-point training over the link (docs/ondevice.md 3b): the TRAIN flag FIXED and the capability bits."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError
from fedtiny.link.messages import TRAIN_FIXED, Cap, MsgType, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.ondevice import FeatureCache, TrainConfig, TrainJob, dequantize_head, train_heads_fixed

KEY = bytes(range(32))
RNG = np.random.default_rng(4)
FEATS = RNG.integers(-128, 128, (150, 64)).astype(np.int8)
LABELS = RNG.integers(0, 10, 150)


def _session(**cfg: object) -> BoardSession:
    s = BoardSession(
        InProcessTransport(VirtualBoard(BoardConfig(device_id=9, fleet_key=KEY, **cfg))), key=KEY
    )
    s.hello()
    return s


def spec_fixed(req: TrainRequest, device_id: int, capacity: int = 256):
    """The spec on what the board received (lr travels as f32)."""
    cache = FeatureCache(1, capacity, 64)
    cache.push(FEATS[None], LABELS[None])
    h = default_head()
    fh = dequantize_head(h)
    return train_heads_fixed(
        fh.weights,
        fh.bias,
        cache.features,
        cache.labels,
        cache.count,
        TrainJob(
            TrainConfig(req.epochs, req.batch_size, float(np.float32(req.lr)), 0.0, 0.0, 0.0),
            input_scale=h.input_scale,
            input_zero_point=h.input_zero_point,
            seed=req.seed,
            round_=req.round,
            device_ids=np.array([device_id]),
        ),
    )


def test_fixed_training_is_the_spec_bit_for_bit() -> None:
    s = _session()
    assert s.info.capabilities & Cap.FLOAT_TRAIN and s.info.capabilities & Cap.FIXED_TRAIN
    s.push_samples(FEATS, LABELS, clear=True)
    req = TrainRequest(2, 16, 0.05, 0.0, 0.0, 0.0, 42, 3, TRAIN_FIXED)
    tr = s.train(req)
    upd = s.read_update()
    ref = spec_fixed(req, 9)
    assert np.array_equal(upd.weights, ref.weights[0]) and np.array_equal(upd.bias, ref.bias[0])
    assert tr.loss == np.float32(ref.loss[0]) and upd.loss == np.float32(ref.loss[0])
    s.ack_update(upd.update_id)
    float_upd = (s.train(TrainRequest(2, 16, 0.05, 0.0, 0.0, 0.0, 42, 3)), s.read_update())[1]
    assert not np.array_equal(float_upd.weights, upd.weights)  # the flag selects the arithmetic
    assert np.abs(float_upd.weights - upd.weights).max() < 0.05  # same SGD, other arithmetic (loss ~47 here)


def test_fixed_training_refusals() -> None:
    s = _session()
    s.push_samples(FEATS[:20], LABELS[:20], clear=True)
    for mom, wd, mu in ((0.9, 0, 0), (0, 1e-4, 0), (0, 0, 0.01)):
        with pytest.raises(DeviceError, match="UNSUPPORTED: fixed-point training is plain SGD"):
            s.train(TrainRequest(1, 8, 0.05, mom, wd, mu, 1, 1, TRAIN_FIXED))
    with pytest.raises(DeviceError, match="UNSUPPORTED: TRAIN flags"):
        s.train(TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1, 0x4))  # bit 1 is PSEUDO; bit 2 is reserved
    # a board without an FPU: fixed only; float requests (flags 0, or the 28-byte legacy layout) are refused
    f = _session(train_arith="fixed")
    assert f.info.capabilities & Cap.FIXED_TRAIN and not f.info.capabilities & Cap.FLOAT_TRAIN
    f.push_samples(FEATS[:20], LABELS[:20], clear=True)
    with pytest.raises(DeviceError, match="UNSUPPORTED: this board trains fixed-point only"):
        f.train(TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1))
    legacy = TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1).encode()[:28]
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        f.request(MsgType.TRAIN, legacy)
    assert f.train(TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1, TRAIN_FIXED)).num_examples == 20
    # a float-only board refuses FIXED
    g = _session(train_arith="float")
    g.push_samples(FEATS[:20], LABELS[:20], clear=True)
    with pytest.raises(DeviceError, match="UNSUPPORTED: this board has no fixed-point training"):
        g.train(TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1, TRAIN_FIXED))
    assert g.request(MsgType.TRAIN, legacy)  # 28 bytes: flags 0, float32
