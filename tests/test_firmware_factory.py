"""The factory model (issue 11 part 5, docs/protocol.md section 5 "Which model runs"): a .tflite built into the
firmware (C: `make FT_FACTORY_MODEL=...`, host port `fedtiny-fw --model`; virtual board: `model=`), whose backbone
every head patch runs on. The C boards and the virtual board answer the same sequences alike and cache the same
features bit for bit; a federated round with two QEMU Cortex-M4F boards and a virtual board runs on raw samples.

Needs cc + make, TensorFlow and tflite-micro; the round needs arm-none-eabi-gcc and qemu-system-arm.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.board.device import BoardConfig, VirtualBoard
from fedtiny.errors import DeviceError
from fedtiny.link.messages import TRAIN_FIXED, Cap, ImageKind, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import (
    Int8Head,
    dequantize_head,
    head_forward_int8,
)
from fedtiny.plan.resolve import strategy_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the firmware test helpers (boards, make, paths) of tests/test_firmware.py
import test_firmware as tf
from board_helpers import fixed_reference, served_board

KEY = tf.KEY
FIXED = TrainRequest(2, 8, 0.05, 0.0, 0.0, 0.0, 7, 1, TRAIN_FIXED)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, np.ndarray]:
    """fedtiny's digits reference model (random weights, converted as scripts/gen_tfl_golden.py and
    tests/test_firmware.py::ref_models do), written to a file, and float samples of its task."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    import keras

    sys.path.insert(0, str(tf.ROOT / "scripts"))
    from gen_tfl_golden import _convert, _randomize

    from fedtiny.tasks import get_task

    keras.utils.set_random_seed(1234)
    task = get_task("digits")
    model = task.build_model(head_inputs=64)
    rng = np.random.default_rng(7)
    x = np.asarray(
        task.generate(rng.integers(0, len(task.classes), 120), rng, task.default_condition()), np.float32
    )
    _randomize(model, np.random.default_rng(21))
    tfl = _convert(model, x[:48])
    path = tmp_path_factory.mktemp("factory") / "digits.tflite"
    path.write_bytes(tfl)
    return path, tfl, x


def _features(model: bytes, xq: np.ndarray) -> np.ndarray:
    """TFLite Micro's features (the head's int8 input) of raw int8 inputs."""
    from fedtiny.model.runtime import Int8Runner

    return Int8Runner(model, "tflm").run_int8(xq)[1]


def _fixed_spec(
    head: Int8Head, feats: np.ndarray, y: np.ndarray, device_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """train_heads_fixed of FIXED on a cache holding exactly these features: (weights, bias)."""
    ref = fixed_reference(head, feats, y, device_id)
    return ref.weights[0], ref.bias[0]


def _factory_session(s: BoardSession, model: bytes, xq: np.ndarray, x: np.ndarray) -> dict:
    """One board with the digits factory model through: raw pushes on the factory head, a NaN refused, a head patch
    redeploy that keeps the backbone and the cache, a reset, a full image (another backbone: RAM lost), a head patch
    after it (back on the factory backbone), a ROLLBACK into the full image and out of it."""
    from fedtiny.model.flatbuffer import read_head, write_head

    out: dict = {}
    factory = read_head(model)
    info = s.hello()
    assert info.capabilities & Cap.RAW_SAMPLES and info.raw_input_len == xq.shape[1]
    assert (info.C, info.D) == (factory.num_classes, factory.num_features)
    assert s.get_head().equals(factory)  # the factory model's own head is the factory head
    y = np.arange(len(xq)) % info.C
    assert s.push_raw(xq[:30], y[:30], clear=True) == 30
    bad = x[:3].reshape(3, -1).copy()
    bad[2, 7] = np.inf
    with pytest.raises(DeviceError, match="MALFORMED: raw float32 sample 2 holds a NaN or an infinity"):
        s.push_raw(bad, y[:3], clear=True)
    bad[2, 7], bad[1, 0] = 0.0, np.nan
    with pytest.raises(DeviceError, match="MALFORMED: raw float32 sample 1 holds a NaN or an infinity"):
        s.push_raw(bad, y[:3])
    assert s.hello().cache_count == 30  # nothing cached, CLEAR not applied
    # a head patch (what every federated round deploys) runs on the factory backbone: raw samples go on, the cache
    # stays; its CONFIRM may take raw model inputs (the factory model with the patch's head)
    patched = factory.with_(bias=factory.bias + 5)
    s.deploy_head(patched, _features(model, xq[:2]))
    st = s.status()
    assert st.slots[st.confirmed].kind == ImageKind.HEAD_PATCH and st.confirmed == 1
    info = s.hello()
    assert info.raw_input_len == xq.shape[1] and info.cache_count == 30
    assert s.push_raw(xq[30:50], y[30:50]) == 50
    out["eval_patched"] = s.evaluate()
    s.train(FIXED)
    out["fixed"] = s.read_update()
    s.ack_update(out["fixed"].update_id)
    s.reset()
    time.sleep(0.3)
    info = s.hello()
    assert info.raw_input_len == xq.shape[1] and s.get_head().equals(patched)  # survives a reboot
    # a full image: its own backbone (here the digits model with another head; RAM is lost)
    other = factory.with_(bias=factory.bias - 7)
    s.deploy_model(write_head(model, other), xq[:2])
    info = s.hello()
    assert info.raw_input_len == xq.shape[1] and info.cache_count == 0
    s.push_raw(xq[:10], y[:10], clear=True)
    # a head patch after it: back on the factory backbone (switch out of a full image: RAM lost); it goes to the
    # slot that is not confirmed, the previous head patch's
    s.deploy_head(patched.with_(bias=patched.bias + 1), _features(model, xq[:2]))
    info = s.hello()
    assert info.raw_input_len == xq.shape[1] and info.cache_count == 0
    assert s.push_raw(xq[:20], y[:20], clear=True) == 20
    out["eval_back"] = s.evaluate()
    # the full image (VERIFIED, the fallback) under test, then ROLLBACK: the head patch on the factory backbone
    st = s.status()
    full = next(i for i, sl in enumerate(st.slots) if sl.kind == ImageKind.TFLITE)
    s.activate(full)
    assert s.get_head().equals(other)
    s.rollback()
    info = s.hello()
    assert info.raw_input_len == xq.shape[1] and info.cache_count == 0
    assert s.push_raw(xq[:20], y[:20], clear=True) == 20
    out["eval_rolled_back"] = s.evaluate()
    out["head"] = s.get_head()
    out["status"] = s.status()
    return out


def test_factory_model_host_firmware_matches_virtual_board(
    tmp_path: Path, digits: tuple[Path, bytes, np.ndarray]
) -> None:
    """The host C firmware with `--model` (its interpreter) and the virtual board with the same model (TFLite
    Micro): the same answers through the sequence, the same features (the fixed-point update, a function of every
    cached feature, equals the spec on TFLite Micro's features bit for bit on both), the same evaluations."""
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.model.runtime import Int8Runner

    tf.make("build/host/fedtiny-fw")
    path, model, x = digits
    xq = Int8Runner(model, "tflm").quantize_input(x).reshape(len(x), -1)
    b = tf.HostBoard(tmp_path / "flash.bin", "--device-id", "8", "--model", str(path)).start()
    vb = VirtualBoard(BoardConfig(device_id=8, fleet_key=KEY, cache_capacity=200), model=model)
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        rc, rv = (_factory_session(s, model, xq, x) for s in (sc, sv))
    finally:
        b.stop()
    factory = read_head(model)
    patched = factory.with_(bias=factory.bias + 5)
    y = np.arange(len(xq)) % factory.num_classes
    feats = _features(model, xq[:50])
    w, bias = _fixed_spec(patched, feats, y[:50], 8)
    for r in (rc, rv):
        assert np.array_equal(r["fixed"].weights, w) and np.array_equal(r["fixed"].bias, bias)
        acc = np.mean(np.argmax(head_forward_int8(patched, feats), 1) == y[:50])
        assert r["eval_patched"].n == 50 and r["eval_patched"].accuracy == np.float32(acc)
    for k in ("eval_patched", "eval_back", "eval_rolled_back"):
        assert (rc[k].n, rc[k].accuracy) == (rv[k].n, rv[k].accuracy), k
        assert rc[k].loss == pytest.approx(rv[k].loss, rel=1e-5), k
    assert rc["head"].equals(rv["head"])
    assert [(sl.state, sl.kind) for sl in rc["status"].slots] == [
        (sl.state, sl.kind) for sl in rv["status"].slots
    ]


def test_factory_model_refused_at_boot(tmp_path: Path) -> None:
    """A --model the interpreter cannot take stops the boot with a line saying why (the build is wrong, not the
    flash); a missing file is refused with one line naming it."""
    tf.make("build/host/fedtiny-fw")
    import subprocess

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x10\x00\x00\x00TFL3" + bytes(64))
    exe = str(tf.BUILD / "host" / "fedtiny-fw")
    r = subprocess.run(
        [exe, "--stdio", "--flash", str(tmp_path / "f.bin"), "--model", str(bad), "-v"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and "bad.tflite: the factory model does not boot" in r.stderr, r.stderr
    assert "factory model: " in r.stderr, r.stderr  # -v: the interpreter's reason
    r = subprocess.run(
        [exe, "--stdio", "--model", str(tmp_path / "none.tflite")], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "none.tflite" in r.stderr, r.stderr


def test_federated_round_on_raw_samples_qemu_boards(
    tmp_path: Path, digits: tuple[Path, bytes, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two emulated Cortex-M4F boards built with the digits model as their factory model (`make
    FT_FACTORY_MODEL=...`) and a virtual board running it: the gateway pushes raw int8 inputs, the boards run the
    backbone and train (fixed point: bit-exact), the server aggregates (FedAvg) and re-quantizes, the gateway
    redeploys the head patch (on the factory backbone) and evaluates on raw inputs. Every update and every evaluation
    equals the spec on TFLite Micro's features, so the C boards' results are bit-identical to the virtual board's."""
    from fedtiny.clients.gateway.boards import GatewayBoards
    from fedtiny.config.schema import Scenario
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.model.runtime import Int8Runner
    from fedtiny.ondevice import quantize_head
    from fedtiny.server.strategy import DeviceStrategy

    tf.need("arm-none-eabi-gcc", "qemu-system-arm")
    path, model, x = digits
    build = "build/factory-digits"
    model_file = tf.BUILD / "factory-digits" / "digits.tflite"  # rewritten only when it changes: no rebuild
    model_file.parent.mkdir(parents=True, exist_ok=True)
    if not model_file.exists() or model_file.read_bytes() != model:
        model_file.write_bytes(model)
    tf.make(
        f"B={build}",
        "THIRD_PARTY=build/third_party",
        f"FT_FACTORY_MODEL={model_file}",
        f"{build}/mps2/fw.elf",
        timeout=600,
    )
    monkeypatch.setattr(tf, "BUILD", tf.FW / build)  # QemuBoard runs BUILD/mps2/fw.elf
    boards = [tf.QemuBoard(51).start(), tf.QemuBoard(52).start()]
    runner = Int8Runner(model, "tflm")
    xq = runner.quantize_input(x).reshape(len(x), -1)
    head = read_head(model)
    try:
        with served_board(
            tmp_path / "vb.flash", 53, KEY, cfg=BoardConfig(cache_capacity=200), model=model
        ) as vb:
            uris = [b.uri for b in boards] + [vb]
            data = {}
            for k, (uri, dev) in enumerate(zip(uris, (51, 52, 53))):
                s = BoardSession(open_transport(uri), key=KEY, timeout=2.0, seed=dev)
                info = s.hello()
                assert info.capabilities & Cap.RAW_SAMPLES and info.raw_input_len == 256, info
                idx = np.arange(k * 30, k * 30 + 40) % len(xq)
                yk = (np.arange(40) + k) % head.num_classes
                # raw int8 model inputs: the board runs the backbone
                assert s.push_raw(xq[idx], yk, clear=True) == 40
                data[dev] = (_features(model, xq[idx]), yk)
                s.close()
            golden = data[51][0][:3]
            gw = GatewayBoards(uris, KEY, timeout=5.0)
            outs = gw.train(head, golden, FIXED, 0, {})
            assert all(not o.error for o in outs), [o.error for o in outs]
            ups = {o.device_id: o.update for o in outs}
            assert sorted(ups) == [51, 52, 53]
            for dev, u in ups.items():  # bit for bit the spec on TFLite Micro's features, on every board
                w, bias = _fixed_spec(head, *data[dev], dev)
                assert np.array_equal(u["weights"], w) and np.array_equal(u["bias"], bias), dev
                assert u["num_examples"] == 40
            devs = (51, 52, 53)
            agg = DeviceStrategy.from_spec(strategy_spec(Scenario())).aggregate(
                1,
                dequantize_head(head),
                np.stack([ups[d]["weights"] for d in devs]),
                np.stack([ups[d]["bias"] for d in devs]),
                np.array([ups[d]["num_examples"] for d in devs]),
                np.array(devs),
                np.array([float(ups[d]["loss"]) for d in devs]),
            )
            assert agg is not None
            calib = np.concatenate([data[d][0][:20] for d in devs])
            new = quantize_head(agg, head.input_scale, head.input_zero_point, calib)
            acks = {o.device_id: int(o.update["update_id"]) for o in outs}  # type: ignore[call-overload]
            evs = gw.evaluate(
                new, golden, 0, acks
            )  # redeploy (head patch) + EVALUATE on the raw-sample features
            assert all(not o.error for o in evs), [o.error for o in evs]
            for o in evs:
                f, yk = data[o.device_id]
                assert o.update["n"] == 40
                assert o.update["correct"] == int(np.sum(np.argmax(head_forward_int8(new, f), 1) == yk))
            for uri in uris:  # the server's head runs on the factory backbone: raw samples still taken
                s = BoardSession(open_transport(uri), key=KEY, timeout=2.0, seed=9)
                info = s.hello()
                assert s.get_head().equals(new) and info.raw_input_len == 256 and info.cache_count == 40
                st = s.status()
                assert st.slots[st.confirmed].kind == ImageKind.HEAD_PATCH
                s.close()
    finally:
        for bd in boards:
            bd.stop()


def test_factory_model_power_cut_at_every_flash_write_of_a_head_redeploy(
    tmp_path: Path, digits: tuple[Path, bytes, np.ndarray]
) -> None:
    """A head patch redeployed over a confirmed full image on a board with a factory model, the power cut at every
    flash program/erase (`--cut-at N`, a separate process): after power-up the board runs the full image (its head)
    or the head patch on the factory backbone, never a mix and never a head without a backbone (raw samples are
    taken either way), and the deploy then completes."""
    import shutil

    from fedtiny.errors import LinkError
    from fedtiny.model.flatbuffer import read_head, write_head
    from fedtiny.model.runtime import Int8Runner

    tf.make("build/host/fedtiny-fw")
    path, model, x = digits
    xq = Int8Runner(model, "tflm").quantize_input(x[:4]).reshape(4, -1)
    factory = read_head(model)
    full, new = factory.with_(bias=factory.bias - 7), factory.with_(bias=factory.bias + 9)
    golden = _features(model, xq[:2])
    args = ("--device-id", "4", "--model", str(path))
    base = tmp_path / "base.bin"
    b = tf.HostBoard(base, *args).start()
    try:
        s = b.session()
        s.deploy_model(write_head(model, full), xq[:2])
        s.close()
    finally:
        b.stop()
    outcomes = []
    for n in range(1, 40):
        flash = tmp_path / f"cut{n}.bin"
        shutil.copy(base, flash)
        b = tf.HostBoard(flash, *args).start("--cut-at", str(n))
        cut = False
        try:
            s = b.session()
            s.retries = 2
            s.deploy_head(new, golden, KEY)
            s.close()
        except (LinkError, DeviceError, OSError):
            cut = True
        rc = b.wait(10) if cut else None
        b.stop()
        if not cut:
            break
        assert rc == 75, f"cut {n}: exit code {rc}"
        b = tf.HostBoard(flash, *args).start()  # power back
        try:
            s = b.session()
            running, st = s.get_head(), s.status()
            kind = st.slots[st.confirmed].kind
            assert (running.equals(full) and kind == ImageKind.TFLITE) or (
                running.equals(new) and kind == ImageKind.HEAD_PATCH
            ), f"cut {n}: running head {kind}"
            assert s.hello().raw_input_len == 256 and s.push_raw(xq, np.arange(4), clear=True) == 4, n
            outcomes.append("new" if running.equals(new) else "old")
            s.deploy_head(new, golden, KEY)  # resumes and completes
            assert s.get_head().equals(new) and s.hello().raw_input_len == 256
            s.close()
        finally:
            b.stop()
    # a cut before the commit record lands leaves the full image confirmed (the test image reverts at boot)
    assert len(outcomes) >= 5 and "old" in outcomes, outcomes
