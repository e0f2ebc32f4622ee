"""The virtual board with a backbone: raw samples through the deployed int8 model in TFLite Micro, and full
.tflite uploads (image kind 2) with test/confirm/rollback."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, VirtualBoard
from fedtiny.errors import DeviceError, ProtocolError
from fedtiny.link.messages import (
    UPLOAD_RESTART,
    Cap,
    ImageKind,
    MsgType,
    SlotState,
    TrainRequest,
    UploadBegin,
    UploadState,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.model.flatbuffer import read_head, write_head
from fedtiny.model.runtime import Int8Runner
from fedtiny.ondevice import head_forward_int8
from fedtiny.tasks import get_task

KEY = bytes(range(32))
TASK = get_task("vibration")


@pytest.fixture(scope="module")
def vib_model() -> bytes:
    """A small real int8 model for the vibration task's 32x32x1 input (conv backbone, 64 features, 5 classes)."""
    import keras

    from fedtiny.model.build import convert_to_int8

    keras.utils.set_random_seed(5)
    inp = keras.Input(TASK.input_shape)
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="features", bias_initializer="ones")(x)
    out = keras.layers.Dense(
        TASK.num_classes, name="head", bias_initializer=keras.initializers.RandomNormal(0, 0.5)
    )(x)
    rep = TASK.generate(np.arange(100) % TASK.num_classes, np.random.default_rng(0))
    return convert_to_int8(keras.Model(inp, out), TASK.input_shape, rep)


def _data(seed: int, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % TASK.num_classes
    return TASK.generate(y, np.random.default_rng(seed)), y


def _session(board: VirtualBoard) -> BoardSession:
    s = BoardSession(InProcessTransport(board), key=KEY, seed=2)
    s.hello()
    return s


def _cached(board: VirtualBoard) -> np.ndarray:
    return board.cache.device(0)[0]


def test_raw_samples_run_the_model_in_tflm(vib_model: bytes) -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY), model=vib_model)
    s = _session(board)
    assert s.info.raw_input_len == int(np.prod(TASK.input_shape))
    assert s.info.capabilities & Cap.RAW_SAMPLES and (s.info.C, s.info.D) == (5, 64)
    ref = Int8Runner(vib_model, "tflm")
    x, y = _data(1)
    assert s.push_raw(ref.quantize_input(x), y, clear=True) == len(y)  # kind 1: int8 model inputs
    assert np.array_equal(_cached(board), ref.features(x))
    assert np.array_equal(board.cache.device(0)[1], y)
    # trained on those features like any cache; the raw path and the feature path give the same cache
    tr = s.train(TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 3, 1))
    assert tr.num_examples == len(y)
    s.ack_update(s.read_update().update_id)
    ev = s.evaluate()
    assert ev.accuracy == pytest.approx(float(np.mean(ref.predict(x) == y)))
    # wrong raw length: SHAPE_MISMATCH; a board without a backbone: UNSUPPORTED
    with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
        s.push_raw(np.zeros((1, 100), np.int8), np.array([0]))
    plain = _session(VirtualBoard(BoardConfig(fleet_key=KEY)))
    assert plain.info.raw_input_len == 0 and not plain.info.capabilities & Cap.RAW_SAMPLES
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        plain.push_raw(ref.quantize_input(x[:1]), y[:1])


def test_float_raw_samples_quantized_on_the_board(tiny_tflite: bytes) -> None:
    """Kind 2: float32 raw samples, quantized by the board with the model's input scale and zero point."""
    board = VirtualBoard(BoardConfig(fleet_key=KEY), model=tiny_tflite)
    s = _session(board)
    x = np.random.default_rng(4).normal(size=(10, 16, 16, 1)).astype(np.float32)
    y = np.arange(10) % 5
    assert s.push_raw(x, y, clear=True) == 10
    assert np.array_equal(_cached(board), Int8Runner(tiny_tflite, "tflm").features(x))


def test_deployed_head_is_written_into_the_model(vib_model: bytes) -> None:
    """After a head patch deploy, TFLM runs the base model with the new head: logits of raw golden inputs and
    the cached features come from write_head(base, new)."""
    board = VirtualBoard(BoardConfig(fleet_key=KEY), model=vib_model)
    s = _session(board)
    old = read_head(vib_model)
    new = old.with_(bias=old.bias + 3000, weights=np.roll(old.weights, 1, axis=1))
    x, y = _data(2, 8)
    patched = write_head(vib_model, new)
    s.deploy_head(new, Int8Runner(vib_model, "tflm").features(x))
    assert board.running_model() == patched
    xq = Int8Runner(patched, "tflm").quantize_input(x).reshape(len(x), -1)
    logits = Int8Runner(patched, "tflm").run_int8(xq)[0]
    assert not np.array_equal(logits, Int8Runner(vib_model, "tflm").run_int8(xq)[0])
    assert np.array_equal(board.runner().run_int8(xq)[0], logits)
    s.push_raw(xq, y, clear=True)
    assert np.array_equal(_cached(board), Int8Runner(patched, "tflm").run_int8(xq)[1])


def test_full_tflite_upload_confirm_rollback(vib_model: bytes, tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    board = VirtualBoard(BoardConfig(fleet_key=KEY), f, model=vib_model)
    s = _session(board)
    base = Int8Runner(vib_model, "tflm")
    x, y = _data(3)
    xq = base.quantize_input(x).reshape(len(x), -1)
    s.push_raw(xq, y, clear=True)
    old = read_head(vib_model)
    new = old.with_(bias=old.bias - 2000, weights=np.roll(old.weights, 3, axis=1))
    model2 = write_head(vib_model, new)
    r2 = Int8Runner(model2, "tflm")

    # half an upload; the running model stays usable (raw samples, train, evaluate)
    begin = UploadBegin.for_image(model2, ImageKind.TFLITE, KEY)
    st = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin.encode()))
    for off in range(0, len(model2) // 2, 2048):
        s.request(MsgType.UPLOAD_CHUNK, off.to_bytes(4, "little") + model2[off : off + 2048])
    assert s.push_raw(xq[:4], y[:4]) == len(y) + 4
    assert np.array_equal(_cached(board)[-4:], base.run_int8(xq[:4])[1])
    s.train(TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 1, 1))
    s.ack_update(s.read_update().update_id)
    assert s.evaluate().n == len(y) + 4

    # a golden self-test that fails: rolled back, the old model runs again
    fin = s.upload(model2, ImageKind.TFLITE)
    assert fin.slot == st.slot and fin.received == len(model2)
    assert s.verify(fin.slot) == begin.sha256
    s.activate(fin.slot)
    assert board.running_model() == model2 and board.cache.count[0] == 0  # a reboot into the new model
    feats = base.features(x[:6])
    with pytest.raises(DeviceError, match="SELFTEST_FAILED"):
        s.confirm(fin.slot, feats, head_forward_int8(old, feats))
    st = s.rollback()
    assert st.active == st.confirmed == 0 and st.slots[fin.slot].state == SlotState.VERIFIED
    assert board.running_model() == vib_model
    s.push_raw(xq[:4], y[:4])
    assert np.array_equal(_cached(board), base.run_int8(xq[:4])[1])

    # deploy_model: golden int8 features (the board checks the new model's head) ...
    st = s.deploy_model(model2, feats)
    assert st.confirmed == fin.slot and st.slots[fin.slot].kind == ImageKind.TFLITE
    assert s.get_head().equals(new) and board.running_model() == model2
    s.push_raw(xq, y, clear=True)
    assert np.array_equal(_cached(board), r2.run_int8(xq)[1])
    # ... or golden raw model inputs (the board runs the whole new model in TFLite Micro)
    old_again = write_head(vib_model, old)
    with pytest.raises(
        ProtocolError, match="at most 4096: send fewer"
    ):  # 5 x 1 KiB inputs do not fit one frame
        s.deploy_model(old_again, xq[:5])
    st = s.deploy_model(old_again, xq[:3])
    assert st.confirmed == 0 and board.running_model() == old_again
    st = s.deploy_model(model2, xq[:3])
    assert st.confirmed == 1

    # unsigned or tampered full images are refused; nothing changes
    with pytest.raises(DeviceError, match="AUTH_FAILED"):
        s.request(MsgType.UPLOAD_BEGIN, UploadBegin.for_image(vib_model, ImageKind.TFLITE, None).encode())
    bad = bytearray(vib_model)
    bad[len(bad) // 2] ^= 1
    begin = UploadBegin.for_image(vib_model, ImageKind.TFLITE, KEY, flags=UPLOAD_RESTART)  # slot 0 holds it
    s.request(MsgType.UPLOAD_BEGIN, begin.encode())
    s.request(MsgType.UPLOAD_CHUNK, (0).to_bytes(4, "little") + bytes(bad[:3000]))
    for off in range(3000, len(bad), 3000):
        s.request(MsgType.UPLOAD_CHUNK, off.to_bytes(4, "little") + bytes(bad[off : off + 3000]))
    with pytest.raises(DeviceError, match="HASH_MISMATCH"):
        s.verify(0)
    assert board.running_model() == model2

    # power cycle: the confirmed full image runs from flash
    again = VirtualBoard(BoardConfig(fleet_key=KEY), f, model=vib_model)
    assert again.running_model() == model2 and again.head.equals(new)
    s2 = _session(again)
    s2.push_raw(xq[:3], y[:3], clear=True)
    assert np.array_equal(_cached(again), r2.run_int8(xq[:3])[1])


def test_full_image_with_wrong_head_shape_fails_verify(vib_model: bytes, tiny_tflite: bytes) -> None:
    board = VirtualBoard(BoardConfig(fleet_key=KEY), model=vib_model)  # 5x64 head; tiny_tflite has 5x64 too
    s = _session(board)
    other = VirtualBoard(BoardConfig(fleet_key=KEY))  # a 10x64 board
    so = _session(other)
    st = so.upload(tiny_tflite, ImageKind.TFLITE)
    with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
        so.verify(st.slot)
    assert s.info.raw_input_len == 1024
