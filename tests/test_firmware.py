"""Firmware tests (issue #5): the C unit tests on the host (ASan+UBSan) and in QEMU (Cortex-M4F), golden
vectors up to date, the libFuzzer target, and the host and QEMU firmware driven by fedtiny's BoardSession
through the full command set, compared with the Python spec and the virtual board.

Needs cc + make; the QEMU tests need arm-none-eabi-gcc and qemu-system-arm; the fuzz test needs clang. A
missing tool skips the tests that need it, with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from board_helpers import fixed_reference, served_board

from fedtiny.clients.board.device import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError, LinkError
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import (
    TRAIN_FIXED,
    Cap,
    ImageKind,
    MsgType,
    SlotState,
    Status,
    TrainRequest,
    UploadBegin,
    UploadState,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import (
    FeatureCache,
    TrainConfig,
    TrainJob,
    dequantize_head,
    head_forward_int8,
    train_heads,
    train_heads_fixed,
)
from fedtiny.ondevice.evaluate import evaluate_head
from fedtiny.plan.resolve import strategy_spec

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
BUILD = FW / "build"
KEY = bytes(range(32))  # the firmware's compiled-in test fleet key (docs/protocol.md vector key)
PASS_LINE = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (apt: gcc-arm-none-eabi libnewlib-arm-none-eabi "
            f"qemu-system-arm clang libclang-rt-14-dev; `make system-deps`)"
        )


def make(*targets: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    need("make", "cc")
    r = subprocess.run(["make", "-C", str(FW), *targets], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"make {' '.join(targets)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def check_pass_line(out: str) -> int:
    m = PASS_LINE.findall(out)
    assert m, f"no pass line in output:\n{out[-3000:]}"
    passed, failed = map(int, m[-1])
    assert failed == 0, out[-3000:]
    return passed


# ------------------------------------------------------------------------------------------- unit tests
def test_c_unit_tests_host_asan_ubsan() -> None:
    make("build/host/unit_tests")
    r = subprocess.run([str(BUILD / "host" / "unit_tests")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert check_pass_line(r.stdout) >= 22


def test_c_unit_tests_qemu_cortex_m4() -> None:
    need("arm-none-eabi-gcc", "qemu-system-arm")
    make("build/mps2/unit_tests.elf")
    r = subprocess.run(
        [
            "qemu-system-arm",
            "-M",
            "mps2-an386",
            "-nographic",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
            str(BUILD / "mps2" / "unit_tests.elf"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert check_pass_line(r.stdout) >= 22


def test_c_unit_tests_64x10_fixed_point_config() -> None:
    """The RAM-budget configuration (64x10 head, 200-sample cache) with the fixed-point training path (boards
    without an FPU: TRAIN runs ft_train_fixed) builds and passes too."""
    defs = "FT_DEFS=-DFT_MAX_CLASSES=10 -DFT_MAX_DIM=64 -DFT_MAX_PAYLOAD=512 -DFT_USE_FLOAT=0"
    need("make", "cc")
    r = subprocess.run(
        ["make", "-C", str(FW), "B=build/small", defs, "build/small/host/unit_tests"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(
        [str(BUILD / "small" / "host" / "unit_tests")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert check_pass_line(r.stdout) >= 22


def check_generated(script: str, timeout: float) -> None:
    """``scripts/<script> --check`` passes: what it generates is up to date."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_golden_vectors_up_to_date() -> None:
    check_generated("gen_golden.py", 120)


def test_proto_header_up_to_date() -> None:
    """firmware/core/ft_proto.h is what scripts/gen_proto.py writes from the Python protocol tables."""
    check_generated("gen_proto.py", 60)
    text = (FW / "core" / "ft_proto.h").read_text()
    assert "Generated by scripts/gen_proto.py" in text
    for t in MsgType:  # every type and status the Python side knows, answered or not by the C board
        assert f"FT_MSG_{t.name} = 0x{int(t):02X}," in text or f"FT_MSG_{t.name} = 0x{int(t):02X}\n" in text
    for st in Status:
        assert re.search(rf"FT_ST_{st.name} = {int(st)}\b", text), st.name


def test_fuzz_frame_and_message_parser() -> None:
    need("clang")
    secs = int(os.environ.get("FEDTINY_FUZZ_SECONDS", "20"))
    make("build/fuzz/fuzz_link")
    work = BUILD / "fuzz" / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            str(BUILD / "fuzz" / "fuzz_link"),
            f"-max_total_time={secs}",
            "-max_len=2048",
            "-timeout=5",
            "-print_final_stats=1",
            str(work),
            str(FW / "tests" / "fuzz" / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=secs + 120,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Done" in r.stderr and "ERROR" not in r.stderr


# ---------------------------------------------------------------------------------------- host firmware
class HostBoard:
    """The host build of the firmware on a TCP port, with its flash in a file."""

    def __init__(self, flash: Path, *args: str, exe: Path | None = None) -> None:
        self.flash, self.args = flash, args
        self.exe = exe or BUILD / "host" / "fedtiny-fw"
        self.proc: subprocess.Popen[str] | None = None
        self.uri = ""

    def start(self, *extra: str) -> HostBoard:
        self.proc = subprocess.Popen(
            [str(self.exe), "--tcp", "0", "--flash", str(self.flash), *self.args, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(socket://\S+)", line)
        assert m, (
            f"host firmware did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
        )
        self.uri = m.group(1)
        return self

    def session(self, **kw: object) -> BoardSession:
        s = BoardSession(open_transport(self.uri), key=KEY, timeout=2.0, seed=1, **kw)  # type: ignore[arg-type]
        s.hello()
        return s

    def wait(self, timeout: float = 10) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def host_fw() -> Path:
    make("build/host/fedtiny-fw")
    return BUILD / "host" / "fedtiny-fw"


def samples(seed: int, n: int = 120, c: int = 10, d: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = rng.integers(-60, 60, (c, d))
    y = rng.integers(0, c, n)
    x = np.clip(protos[y] + rng.integers(-50, 50, (n, d)), -128, 127).astype(np.int8)
    return x, y


def spec_update(head, x, y, req: TrainRequest, device_id: int, capacity: int):
    """What the spec says a board with this head and these pushed samples trains."""
    cache = FeatureCache(1, capacity, head.num_features)
    cache.push(x[None], y[None])
    fh = dequantize_head(head)
    cfg = TrainConfig(req.epochs, req.batch_size, req.lr, req.momentum, req.weight_decay, req.prox_mu)
    return train_heads(
        fh.weights,
        fh.bias,
        cache.features,
        cache.labels,
        cache.count,
        TrainJob(
            cfg,
            input_scale=head.input_scale,
            input_zero_point=head.input_zero_point,
            seed=req.seed,
            round_=req.round,
            device_ids=np.array([device_id]),
        ),
    )


def same_bits(a, b) -> bool:
    """The same float32 bit patterns (+0 and -0 differ)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))


def assert_matches_spec(w, b, loss, head, x, y, req: TrainRequest, device_id: int, capacity: int) -> None:
    """Bit for bit what the spec trains (docs/ondevice.md 3a: one float32 arithmetic, the spec's own exp and log,
    no fused multiply-add): weights, bias and the reported loss."""
    ref = spec_update(head, x, y, req, device_id, capacity)
    assert same_bits(w, ref.weights[0]), (
        f"weights differ at {np.argwhere(np.asarray(w) != ref.weights[0])[:5]}"
    )
    assert same_bits(b, ref.bias[0]), f"bias {b} vs spec {ref.bias[0]}"
    assert same_bits(loss, ref.loss[0]), f"loss {loss!r} vs spec {float(ref.loss[0])!r}"


def full_command_set(s: BoardSession, device_id: int, capacity: int, reconnect) -> BoardSession:
    """Every message type against one board, checked against the spec; returns the (last) session."""
    info = s.info
    assert info is not None and (info.C, info.D) == (10, 64) and info.device_id == device_id
    assert info.max_payload >= 256 and info.rx_window >= 1
    st = s.status()
    assert st.confirmed == st.active and st.slots[st.confirmed].state == SlotState.CONFIRMED
    head = s.get_head()
    assert head.equals(default_head())
    x, y = samples(device_id)
    assert s.push_samples(x, y, clear=True) == min(len(y), capacity)
    req = TrainRequest(2, 16, 0.02, 0.5, 1e-4, 0.01, 42, 3)
    tr = s.train(req)
    assert tr.num_examples == min(len(y), capacity)
    with pytest.raises(DeviceError, match="UPDATE_PENDING"):
        s.train(req)
    upd = s.read_update()  # HMAC tag and device id checked by the session
    assert_matches_spec(upd.weights, upd.bias, upd.loss, head, x, y, req, device_id, capacity)
    s.ack_update(upd.update_id)
    s.ack_update(upd.update_id)  # idempotent
    ev = s.evaluate()
    q = head_forward_int8(head, x[-capacity:] if len(x) > capacity else x)
    assert ev.n == min(len(y), capacity)
    # EVALUATE bit for bit as the spec (docs/protocol.md: the training spec's float32 softmax, exp and log)
    cache = FeatureCache(1, capacity, x.shape[1])
    cache.push(x[None], y[None])
    acc, loss = evaluate_head(head, cache.features[0, : ev.n], cache.labels[0, : ev.n])
    assert np.float32(ev.accuracy).tobytes() == np.float32(acc).tobytes()
    assert np.float32(ev.loss).tobytes() == np.float32(loss).tobytes(), (ev.loss, loss)
    # SET_HEAD (RAM only), checked through GET_HEAD and EVALUATE
    h2 = head.with_(bias=head.bias + 100)
    s.set_head(h2)
    assert s.get_head().equals(h2)
    s.set_head(head)
    # upload cut mid-way (link dropped after two chunks), then resumed on a new link
    new = head.with_(bias=head.bias - 37)
    image = encode_head_patch(new)
    begin = UploadBegin.for_image(image, ImageKind.HEAD_PATCH, KEY)
    st0 = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin.encode()))
    assert st0.state == SlotState.RECEIVING and st0.received == 0
    for off in (0, 200):
        s.request(MsgType.UPLOAD_CHUNK, off.to_bytes(4, "little") + image[off : off + 200])
    s.close()
    s = reconnect()
    mid = s.upload_status()
    assert mid.received == 400 and mid.total_len == len(image)
    resumed = UploadState.decode(s.request(MsgType.UPLOAD_BEGIN, begin.encode()))
    assert resumed.resumed == 1 and resumed.received == 400
    final = s.upload(image, ImageKind.HEAD_PATCH, KEY)
    assert final.received == len(image)
    assert s.verify(final.slot) == begin.sha256
    golden = x[:8]
    s.activate(final.slot)
    with pytest.raises(DeviceError, match="SELFTEST_FAILED"):
        s.confirm(final.slot, golden, head_forward_int8(head, golden))  # expected of the old head: must fail
    st = s.rollback()
    assert st.active == st.confirmed != final.slot
    assert s.get_head().equals(head)
    st = s.deploy_head(new, golden, KEY)
    assert st.confirmed == final.slot and s.get_head().equals(new)
    # unsigned images are refused
    with pytest.raises(DeviceError, match="AUTH_FAILED"):
        s.request(MsgType.UPLOAD_BEGIN, UploadBegin.for_image(image, ImageKind.HEAD_PATCH, None).encode())
    # EVALUATE of the new head equals the spec's predictions
    ev = s.evaluate(16)
    q = head_forward_int8(new, x[:16])
    assert ev.n == 16 and abs(ev.accuracy - float(np.mean(np.argmax(q, 1) == y[:16]))) < 1e-6
    # RESET: the confirmed new head survives the reboot; RAM (cache) does not
    s.reset()
    time.sleep(0.3)
    info = s.hello()
    assert info.cache_count == 0
    assert s.get_head().equals(new)
    return s


def test_host_firmware_full_command_set(host_fw: Path, tmp_path: Path) -> None:
    b = HostBoard(tmp_path / "flash.bin", "--device-id", "21").start()
    try:
        s = full_command_set(b.session(), 21, 200, b.session)
        s.close()
    finally:
        b.stop()


def test_host_firmware_matches_virtual_board(host_fw: Path, tmp_path: Path) -> None:
    """Same requests to the C firmware and to the virtual board: same heads, same evaluation."""
    b = HostBoard(tmp_path / "flash.bin", "--device-id", "5").start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=KEY, cache_capacity=200))
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        x, y = samples(9, 260)  # more than the cache: the ring buffer wraps on both
        req = TrainRequest(3, 10, 0.02, 0.5, 0.0, 0.0, 7, 11)
        for s in (sc, sv):
            s.push_samples(x, y, clear=True)
        uc, uv = sc.train(req), sv.train(req)
        assert (uc.num_examples, uc.update_id > 0) == (uv.num_examples, True)
        bc, bv = sc.read_update(), sv.read_update()
        assert_matches_spec(bc.weights, bc.bias, bc.loss, default_head(), x, y, req, 5, 200)
        assert_matches_spec(bv.weights, bv.bias, bv.loss, default_head(), x, y, req, 5, 200)
        # so the C board and the virtual board agree bit for bit, too
        assert same_bits(bc.weights, bv.weights) and same_bits(bc.bias, bv.bias)
        assert same_bits([uc.loss, bc.loss], [uv.loss, bv.loss])
        ec, ev = sc.evaluate(), sv.evaluate()
        assert ec.n == ev.n and ec.accuracy == pytest.approx(ev.accuracy, abs=1e-6)
        assert ec.loss == pytest.approx(ev.loss, rel=1e-4)
        assert sc.get_head().equals(sv.get_head())
    finally:
        b.stop()


def test_fixed_point_training_identical_on_firmware_and_virtual_board(host_fw: Path, tmp_path: Path) -> None:
    """TRAIN with flag FIXED: the FT_USE_FLOAT=0 host firmware (no FPU: fixed capability only), the default
    firmware (both) and the virtual board give the same update bit for bit, and that is the spec's
    train_heads_fixed on the pushed features."""
    r = subprocess.run(
        ["make", "-C", str(FW), "B=build/fixed", "FT_DEFS=-DFT_USE_FLOAT=0", "build/fixed/host/fedtiny-fw"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fixed = HostBoard(
        tmp_path / "fixed.bin", "--device-id", "5", exe=BUILD / "fixed" / "host" / "fedtiny-fw"
    ).start()
    full = HostBoard(tmp_path / "float.bin", "--device-id", "5").start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=KEY, cache_capacity=200))
    try:
        sf, sc = fixed.session(), full.session()
        sv = BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        assert sf.info.capabilities & (Cap.FIXED_TRAIN | Cap.FLOAT_TRAIN) == Cap.FIXED_TRAIN
        for s in (sc, sv):
            assert (
                s.info.capabilities & (Cap.FIXED_TRAIN | Cap.FLOAT_TRAIN) == Cap.FIXED_TRAIN | Cap.FLOAT_TRAIN
            )
        x, y = samples(12, 260)  # more than the cache: the ring buffer wraps
        for s in (sf, sc, sv):
            s.push_samples(x, y, clear=True)
        with pytest.raises(DeviceError, match="UNSUPPORTED: this board trains fixed-point only"):
            sf.train(TrainRequest(1, 8, 0.02, 0.0, 0.0, 0.0, 7, 11))
        with pytest.raises(DeviceError, match="UNSUPPORTED: fixed-point training is plain SGD"):
            sf.train(TrainRequest(1, 8, 0.02, 0.5, 0.0, 0.0, 7, 11, TRAIN_FIXED))
        req = TrainRequest(3, 10, 0.02, 0.0, 0.0, 0.0, 7, 11, TRAIN_FIXED)
        res = [s.train(req) for s in (sf, sc, sv)]
        upd = [s.read_update() for s in (sf, sc, sv)]
        cache = FeatureCache(1, 200, 64)
        cache.push(x[None], y[None])
        fh = dequantize_head(default_head())
        ref = train_heads_fixed(
            fh.weights,
            fh.bias,
            cache.features,
            cache.labels,
            cache.count,
            TrainJob(
                TrainConfig(3, 10, float(np.float32(0.02)), 0.0, 0.0, 0.0),
                input_scale=default_head().input_scale,
                input_zero_point=default_head().input_zero_point,
                seed=7,
                round_=11,
                device_ids=np.array([5]),
            ),
        )
        for tr, u in zip(res, upd):
            assert tr.num_examples == u.num_examples == 200
            assert np.array_equal(u.weights, ref.weights[0]) and np.array_equal(u.bias, ref.bias[0])
            assert u.loss == tr.loss == np.float32(ref.loss[0])
    finally:
        fixed.stop()
        full.stop()


def test_host_firmware_power_cut_at_every_flash_write(host_fw: Path, tmp_path: Path) -> None:
    """Process-level power cuts (the firmware exits at the N-th flash program/erase) during an upload and
    the update commit: after power-up the board runs the old or the new head, never a mix, and the deploy
    then completes."""
    base = tmp_path / "base.bin"
    b = HostBoard(base, "--device-id", "3").start()
    s = b.session()
    old = s.get_head()
    s.close()
    b.stop()
    new = old.with_(bias=old.bias + 9, weights=np.roll(old.weights, 1, axis=1))
    golden = samples(3)[0][:4]
    outcomes = []
    for n in range(1, 60):
        flash = tmp_path / f"cut{n}.bin"
        shutil.copy(base, flash)
        b = HostBoard(flash, "--device-id", "3").start("--cut-at", str(n))
        cut = False
        try:
            s = b.session()
            s.retries = 2
            s.deploy_head(new, golden, KEY)
            s.close()
        except (LinkError, DeviceError, OSError, ConnectionError):
            cut = True
        rc = b.wait(10) if cut else None
        b.stop()
        if not cut:
            break
        assert rc == 75, f"cut {n}: exit code {rc}"
        b = HostBoard(flash, "--device-id", "3").start()  # power back
        try:
            s = b.session()
            running = s.get_head()
            assert running.equals(old) or running.equals(new), f"cut {n}: running head is a mix"
            st = s.status()
            assert st.slots[st.confirmed].state == SlotState.CONFIRMED and st.active == st.confirmed
            outcomes.append("new" if running.equals(new) else "old")
            s.deploy_head(new, golden, KEY)  # resumes and completes
            assert s.get_head().equals(new)
            s.close()
        finally:
            b.stop()
    assert len(outcomes) >= 5, outcomes
    assert "old" in outcomes


# ------------------------------------------------------------------------------------------------ QEMU
class QemuBoard:
    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.uri = ""

    def start(self) -> QemuBoard:
        elf = BUILD / "mps2" / "fw.elf"
        nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
        addr = int(re.search(r"^([0-9a-f]+) \S ft_board_cfg$", nm, re.M).group(1), 16)  # type: ignore[union-attr]
        with socket.socket() as tmp:
            tmp.bind(("127.0.0.1", 0))
            port = tmp.getsockname()[1]
        data = (self.device_id << 32) | 0xB0A4DCF6
        self.proc = subprocess.Popen(
            [
                "qemu-system-arm",
                "-M",
                "mps2-an386",
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on",
                "-device",
                f"loader,addr=0x{addr:x},data=0x{data:x},data-len=8",
                "-kernel",
                str(elf),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("QEMU did not open its serial port") from None
                time.sleep(0.1)
        self.uri = f"socket://127.0.0.1:{port}"
        return self

    def session(self) -> BoardSession:
        s = BoardSession(open_transport(self.uri), key=KEY, timeout=2.0, seed=2)
        s.hello()
        return s

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def qemu_fw() -> Path:
    need("arm-none-eabi-gcc", "qemu-system-arm")
    make("build/mps2/fw.elf")
    return BUILD / "mps2" / "fw.elf"


def test_qemu_firmware_full_command_set(qemu_fw: Path) -> None:
    b = QemuBoard(31).start()
    try:
        s = full_command_set(b.session(), 31, 200, b.session)
        s.close()
    finally:
        b.stop()


def test_federated_round_two_qemu_boards_and_a_virtual_board(qemu_fw: Path, tmp_path: Path) -> None:
    """Two emulated Cortex-M4 boards and one virtual board train one round through the real-board gateway;
    the server aggregates (FedAvg) and re-quantizes; the new int8 head is deployed to all three."""
    from fedtiny.clients.gateway.boards import GatewayBoards
    from fedtiny.config.schema import Scenario
    from fedtiny.ondevice import quantize_head
    from fedtiny.server.strategy import DeviceStrategy

    boards = [QemuBoard(41).start(), QemuBoard(42).start()]
    try:
        with served_board(tmp_path / "vb.flash", 43, KEY, cfg=BoardConfig(cache_capacity=200)) as vb:
            uris = [b.uri for b in boards] + [vb]
            data = {}
            for uri, dev in zip(uris, (41, 42, 43)):
                s = BoardSession(open_transport(uri), key=KEY, timeout=2.0, seed=dev)
                s.hello()
                data[dev] = samples(100 + dev, 150)
                s.push_samples(*data[dev], clear=True)
                s.close()
            head = default_head()
            golden = data[41][0][:4]
            req = TrainRequest(2, 16, 0.02, 0.5, 0.0, 0.0, 1234, 1)
            gw = GatewayBoards(uris, KEY, timeout=2.0)
            outs = gw.train(head, golden, req, 0, {})
            assert all(not o.error for o in outs), [o.error for o in outs]
            ups = {o.device_id: o.update for o in outs}
            assert sorted(ups) == [41, 42, 43]
            for dev, u in ups.items():  # every board computed what the spec computes for it
                assert_matches_spec(u["weights"], u["bias"], u["loss"], head, *data[dev], req, dev, 200)
            fh = dequantize_head(head)
            w = np.stack([ups[d]["weights"] for d in (41, 42, 43)])
            b = np.stack([ups[d]["bias"] for d in (41, 42, 43)])
            n = np.array([ups[d]["num_examples"] for d in (41, 42, 43)])
            loss = np.array([float(ups[d]["loss"]) for d in (41, 42, 43)])
            agg = DeviceStrategy.from_spec(strategy_spec(Scenario())).aggregate(
                1, fh, w, b, n, np.array([41, 42, 43]), loss
            )
            assert agg is not None
            calib = np.concatenate([data[d][0][:20] for d in (41, 42, 43)])
            new = quantize_head(agg, head.input_scale, head.input_zero_point, calib)
            acks = {o.device_id: int(o.update["update_id"]) for o in outs}  # type: ignore[call-overload]
            evs = gw.evaluate(new, golden, 0, acks)
            assert all(not o.error for o in evs), [o.error for o in evs]
            for o in evs:
                x, y = data[o.device_id]
                q = head_forward_int8(new, x)
                assert o.update["n"] == len(y)
                assert o.update["correct"] == int(np.sum(np.argmax(q, 1) == y))
            for uri in uris:  # the redeployed, confirmed head on every board is the server's int8 head
                s = BoardSession(open_transport(uri), key=KEY, timeout=2.0, seed=9)
                s.hello()
                assert s.get_head().equals(new)
                s.close()
    finally:
        for bd in boards:
            bd.stop()


def test_issue10_sequences_answered_alike(host_fw: Path, tmp_path: Path) -> None:
    """The issue-10 reproductions against the C firmware and the virtual board: the same status for every
    request (hyper-parameter ranges, work bound, SET_HEAD total and staging, CONFIRM of the image under test,
    zero golden vectors, downgrade, input quantization, retry cache)."""
    import struct

    from fedtiny.link.frames import Frame, encode_frame
    from fedtiny.link.messages import Confirm, Status

    b = HostBoard(tmp_path / "flash.bin", "--device-id", "5").start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=KEY, cache_capacity=200))
    inf = float("inf")
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()

        def both(fn) -> list[str]:
            out = []
            for s in (sc, sv):
                try:
                    fn(s)
                    out.append("OK")
                except DeviceError as e:
                    out.append(next(w for w in re.findall(r"[A-Z_]+", str(e)) if w in Status.__members__))
            assert out[0] == out[1], out
            return out

        x, y = samples(4, 200)
        both(lambda s: s.push_samples(x, y, clear=True))
        for req in (
            TrainRequest(1, 4, inf, 0, 0, 0, 1, 1, TRAIN_FIXED),
            TrainRequest(1, 4, 0.05, inf, 0, 0, 1, 1),
            TrainRequest(1, 4, 0.05, 0, 0, float("nan"), 1, 1),
            TrainRequest(1001, 4, 0.05, 0, 0, 0, 1, 1),
            TrainRequest(328, 1, 0.05, 0, 0, 0, 1, 1),
            TrainRequest(1, 4, 0.05, 1.0, 0, 0, 1, 1),
        ):
            assert both(lambda s, r=req: s.train(r)) == ["MALFORMED"] * 2
        head = default_head()
        patch = encode_head_patch(head.with_(bias=head.bias + 3))
        for s in (sc, sv):
            s.request(MsgType.SET_HEAD, struct.pack("<II", len(patch), 0) + patch[:300])
        assert both(lambda s: s.verify(1)) == ["BAD_STATE"] * 2  # unrelated: the staging is kept
        assert (
            both(lambda s: s.request(MsgType.SET_HEAD, struct.pack("<II", 10**7, 0) + patch[:8]))
            == ["SHAPE_MISMATCH"] * 2
        )
        both(lambda s: s.request(MsgType.SET_HEAD, struct.pack("<II", len(patch), 300) + patch[300:]))
        # CONFIRM tests the image under test, not a later SET_HEAD
        xh, yh = head.with_(bias=head.bias - 300), head.with_(bias=head.bias + 5000)
        g = x[:4]
        for s in (sc, sv):
            st = s.upload(encode_head_patch(xh), security_counter=2)
            s.verify(st.slot)
            s.activate(st.slot)
            s.set_head(yh)
        assert both(lambda s: s.confirm(1, g, head_forward_int8(yh, g))) == ["SELFTEST_FAILED"] * 2
        assert (
            both(lambda s: s.request(MsgType.CONFIRM, Confirm(1, 0, g[:0], g[:0, :10]).encode()))
            == ["MALFORMED"] * 2
        )
        assert both(lambda s: s.confirm(1, g, head_forward_int8(xh, g))) == ["OK"] * 2
        assert both(lambda s: s.deploy_head(head, g, security_counter=1)) == ["DOWNGRADE"] * 2
        assert both(lambda s: s.activate(0)) == ["DOWNGRADE"] * 2
        other = head.with_(input_scale=head.input_scale * 2)
        assert (
            both(lambda s: s.verify(s.upload(encode_head_patch(other), security_counter=2).slot))
            == ["SHAPE_MISMATCH"] * 2
        )
        # a refusal does not replace the retry cache: the retried PUSH is answered from it
        for s in (sc, sv):
            push = encode_frame(
                Frame(MsgType.PUSH_SAMPLES, 900, struct.pack("<BBHH", 0, 0, 1, 64) + b"\0\0" + bytes(64))
            )
            got = []
            for raw in (push, encode_frame(Frame(MsgType.HELLO, 901, b"x")), push):
                s.t.write(raw)
                fr = s._wait({900, 901}, 2.0)
                assert fr is not None
                got.append((fr.status, fr.payload))
            assert got[1][0] == 3 and got[0] == got[2]  # MALFORMED; the retry is not pushed twice
    finally:
        b.stop()


def test_host_firmware_takes_a_users_softmax_model_head(host_fw: Path, tmp_path: Path) -> None:
    """Issue 8: a user's int8 classifier (float I/O, FULLY_CONNECTED 16->4 -> SOFTMAX, made with plain TensorFlow)
    gives the C firmware its factory head; the board trains it as the spec does and takes a re-trained head."""
    import keras
    import tensorflow as tf

    from fedtiny.model.flatbuffer import read_head, read_tail
    from fedtiny.ondevice import FloatHead, quantize_head

    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    xf = rng.normal(size=(400, 12)).astype(np.float32)
    inp = keras.Input((12,), batch_size=1)
    dense = keras.layers.Dense(4, bias_initializer=keras.initializers.RandomNormal(0, 0.3))
    m = keras.Model(inp, keras.layers.Softmax()(dense(keras.layers.Dense(16, activation="relu")(inp))))
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([xf[i : i + 1]] for i in range(200))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    model = bytes(conv.convert())
    head = read_head(model)
    assert [op.kind for op in read_tail(model).ops] == ["SOFTMAX", "DEQUANTIZE"]
    factory = tmp_path / "head.bin"
    factory.write_bytes(encode_head_patch(head))
    b = HostBoard(tmp_path / "flash.bin", "--device-id", "8", "--factory-head", str(factory)).start()
    try:
        s = b.session()
        assert s.info is not None and (s.info.C, s.info.D) == (4, 16)
        assert s.get_head().equals(head)
        x = rng.integers(-128, 127, (60, 16)).astype(np.int8)
        y = rng.integers(0, 4, 60)
        assert s.push_samples(x, y, clear=True) == 60
        req = TrainRequest(2, 8, 0.05, 0.0, 0.0, 0.0, 3, 1)
        s.train(req)
        upd = s.read_update()
        assert_matches_spec(upd.weights, upd.bias, upd.loss, head, x, y, req, 8, 200)
        new = quantize_head(FloatHead(upd.weights, upd.bias), head.input_scale, head.input_zero_point, x)
        s.ack_update(upd.update_id)
        s.deploy_head(new, x[:4], KEY)
        assert s.get_head().equals(new)
        ev = s.evaluate()
        assert ev.n == 60
        assert ev.accuracy == pytest.approx(
            float(np.mean(np.argmax(head_forward_int8(new, x), axis=-1) == y))
        )
        s.close()
    finally:
        b.stop()


# ----------------------------------------------------------------------- full images: the C interpreter
@pytest.fixture(scope="module")
def ref_models() -> dict[str, tuple[bytes, np.ndarray]]:
    """fedtiny's digits and vibration reference models (random weights, as scripts/gen_tfl_golden.py builds them),
    converted full-integer int8, with float samples of their task."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    import keras

    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_tfl_golden import _convert, _randomize

    from fedtiny.tasks import get_task

    keras.utils.set_random_seed(1234)
    out = {}
    for name in ("digits", "vibration"):
        task = get_task(name)
        model = task.build_model(head_inputs=64)
        rng = np.random.default_rng(7)
        x = np.asarray(
            task.generate(rng.integers(0, len(task.classes), 120), rng, task.default_condition()), np.float32
        )
        _randomize(model, np.random.default_rng(21))
        out[name] = (_convert(model, x[:48]), x)
    return out


def _status_of(e: DeviceError) -> str:
    from fedtiny.link.messages import Status

    return next(w for w in re.findall(r"[A-Z_]+", str(e)) if w in Status.__members__)


def _full_model_session(s: BoardSession, model: bytes, x: np.ndarray, floats: bool, golden_n: int) -> dict:
    """One board through the full-model path: no backbone at first; deploy_model (whole-model CONFIRM); a reset
    (boot re-verifies the image); raw int8 (and float32) pushes; EVALUATE; a fixed-point and a float TRAIN; a head
    patch of other input quantization refused; a head patch deployed (no backbone any more, the cache is
    cleared); a rollback into the full image."""
    from fedtiny.model.flatbuffer import read_head
    from fedtiny.model.runtime import Int8Runner

    out: dict = {}
    runner = Int8Runner(model, "tflm")
    raw_len = int(np.prod(runner.input_shape))
    info = s.hello()
    assert info.capabilities & Cap.FULL_IMAGE and not info.capabilities & Cap.RAW_SAMPLES
    assert info.raw_input_len == 0 and info.arena_bytes == 0  # HELLO's extension: no model runs
    xq = runner.quantize_input(x).reshape(len(x), -1)
    y = np.arange(len(x)) % info.C
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        s.push_raw(xq[:2], y[:2])
    old_head = s.get_head()
    st = s.deploy_model(model, xq[:golden_n])  # CONFIRM runs the whole model on raw int8 inputs
    out["confirmed"] = st.confirmed
    s.reset()
    time.sleep(0.3)
    info = s.hello()
    assert info.capabilities & Cap.RAW_SAMPLES and info.raw_input_len == raw_len and info.cache_count == 0
    out["arena"] = info.arena_bytes  # the arena the running full image needs, as this board plans it
    head = read_head(model)
    assert s.get_head().equals(head)
    n_int = 50
    assert s.push_raw(xq[:n_int], y[:n_int], clear=True) == n_int
    if floats:
        assert s.push_raw(x[n_int : n_int + 20].reshape(20, -1), y[n_int : n_int + 20]) == n_int + 20
    with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
        s.push_raw(xq[:1, :-1], y[:1])
    out["eval"] = s.evaluate()
    fixed = TrainRequest(2, 8, 0.05, 0.0, 0.0, 0.0, 7, 1, TRAIN_FIXED)
    s.train(fixed)
    out["fixed"] = s.read_update()
    s.ack_update(out["fixed"].update_id)
    flt = TrainRequest(2, 16, 0.02, 0.5, 0.0, 0.01, 3, 2)
    s.train(flt)
    out["float"] = s.read_update()
    s.ack_update(out["float"].update_id)
    # a head patch must read the features the firmware's factory head reads: the full image's differ
    with pytest.raises(DeviceError, match="SHAPE_MISMATCH"):
        s.deploy_head(head.with_(bias=head.bias + 1), np.zeros((1, info.D), np.int8))
    # a head patch runs without a backbone (this board has no built-in model): raw samples stop, RAM is cleared
    s.deploy_head(old_head.with_(bias=old_head.bias + 3), np.zeros((2, info.D), np.int8))
    info = s.hello()
    assert not info.capabilities & Cap.RAW_SAMPLES and info.raw_input_len == 0 and info.cache_count == 0
    assert info.arena_bytes == 0
    # the full image again (its slot is VERIFIED, kept as the fallback), then ROLLBACK back to the head patch
    stt = s.status()
    full_slot = next(i for i, sl in enumerate(stt.slots) if sl.kind == ImageKind.TFLITE)
    s.activate(full_slot)
    info = s.hello()
    assert info.raw_input_len == raw_len
    s.push_raw(xq[:3], y[:3], clear=True)
    s.rollback()
    info = s.hello()
    assert info.raw_input_len == 0 and info.cache_count == 0
    out["head_after"] = s.get_head()
    return out


def _spec_features(model: bytes, x: np.ndarray, floats: bool, c: int) -> tuple[np.ndarray, np.ndarray]:
    """What TFLite Micro computes for the same pushes: the head's int8 input tensor per sample."""
    from fedtiny.model.runtime import Int8Runner

    runner = Int8Runner(model, "tflm")
    y = np.arange(len(x)) % c
    xq = runner.quantize_input(x)
    feats = [runner.run_int8(xq[:50])[1]]
    if floats:
        feats.append(runner.run_int8(runner.quantize_input(x[50:70]))[1])
    n = 70 if floats else 50
    return np.concatenate(feats), y[:n]


def _check_full_model_run(r: dict, model: bytes, x: np.ndarray, floats: bool, device_id: int) -> None:
    """A board's results of _full_model_session against the spec on TFLite Micro's features: the fixed-point
    update bit for bit (it depends on every cached feature), the float update bit for bit too,
    EVALUATE's accuracy exactly."""
    from fedtiny.model.flatbuffer import read_head

    head = read_head(model)
    feats, y = _spec_features(model, x, floats, head.num_classes)
    ref = fixed_reference(head, feats, y, device_id)
    u = r["fixed"]
    assert u.num_examples == len(y)
    assert np.array_equal(u.weights, ref.weights[0]) and np.array_equal(u.bias, ref.bias[0])
    assert u.loss == np.float32(ref.loss[0])
    f = r["float"]
    assert_matches_spec(
        f.weights,
        f.bias,
        f.loss,
        head,
        feats,
        y,
        TrainRequest(2, 16, 0.02, 0.5, 0.0, 0.01, 3, 2),
        device_id,
        200,
    )
    q = head_forward_int8(head, feats)
    assert r["eval"].n == len(y)
    assert r["eval"].accuracy == np.float32(np.mean(np.argmax(q, 1) == y))


@pytest.mark.parametrize("name", ["digits", "vibration"])
def test_full_model_and_raw_samples_match_virtual_board(
    host_fw: Path, tmp_path: Path, ref_models, name: str
) -> None:
    """Issue 11 part 5: a real int8 .tflite uploaded as a full image (UPLOAD kind 2) to the C host firmware (its own
    int8 interpreter) and to the virtual board (TFLite Micro): the same whole-model CONFIRM, raw int8 and float32
    samples cached as the same features (the fixed-point update, a function of every cached feature, is bit-for-bit
    the spec's on TFLite Micro's features), the same EVALUATE, the same refusals and state changes."""
    from fedtiny.model.flatbuffer import read_head

    model, x = ref_models[name]
    head = read_head(model)
    floats = (
        name == "digits"
    )  # 16x16 inputs: a float32 sample fits a 4 KB frame (vibration's 32x32 goes as int8)
    golden_n = 4 if floats else 3
    factory = default_head(head.num_classes, head.num_features)
    fh = tmp_path / "factory.bin"
    fh.write_bytes(encode_head_patch(factory))
    b = HostBoard(tmp_path / "flash.bin", "--device-id", "5", "--factory-head", str(fh)).start()
    vb = VirtualBoard(BoardConfig(device_id=5, fleet_key=KEY, cache_capacity=200), factory_head=factory)
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        rc, rv = (_full_model_session(s, model, x, floats, golden_n) for s in (sc, sv))
        for r in (rc, rv):
            _check_full_model_run(r, model, x, floats, 5)
        assert rc["eval"].loss == pytest.approx(rv["eval"].loss, rel=1e-4)
        assert rc["head_after"].equals(rv["head_after"]) and rc["confirmed"] == rv["confirmed"]
        # HELLO's arena: the virtual board's is TFLite Micro's, the C board's its own planner's, no larger
        # (issue 11 part 3; measured: digits 2560 vs 5630 bytes, vibration 3072 vs 6398)
        from fedtiny.model.info import min_arena_bytes

        assert rv["arena"] == min_arena_bytes(model)
        assert 0 < rc["arena"] <= rv["arena"], (rc["arena"], rv["arena"])
    finally:
        b.stop()


def test_full_image_refusals(host_fw: Path, tmp_path: Path, ref_models) -> None:
    """Corrupt and unsupported full images: VERIFY refuses them on both boards (the C board with a reason naming
    the op or the defect), nothing crashes, and the confirmed model keeps running."""
    import keras
    import tensorflow as tf

    model, x = ref_models["digits"]
    keras.utils.set_random_seed(5)
    inp = keras.Input((8,), batch_size=1)
    m = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Dense(64, activation="tanh")(inp)))
    rep = np.random.default_rng(5).normal(size=(32, 8)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(32))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    tanh = bytes(conv.convert())
    rng = np.random.default_rng(3)
    bad_root = bytearray(model)
    bad_root[0:4] = (len(model) + 4096).to_bytes(4, "little")
    corrupt = {"truncated": model[: len(model) // 2], "root offset": bytes(bad_root)}
    for i in range(6):  # bytes overwritten in the flatbuffer's tables (the first 2 KB and the last 4 KB)
        m2 = bytearray(model)
        for pos in (
            rng.integers(0, 2048, 12).tolist() + rng.integers(len(model) - 4096, len(model), 12).tolist()
        ):
            m2[pos] = int(rng.integers(0, 256))
        corrupt[f"mutated {i}"] = bytes(m2)
    b = HostBoard(tmp_path / "flash.bin", "--device-id", "6").start()
    vb = VirtualBoard(BoardConfig(device_id=6, fleet_key=KEY, cache_capacity=200))
    try:
        sc, sv = b.session(), BoardSession(InProcessTransport(vb), key=KEY, seed=1)
        sv.hello()
        for s in (sc, sv):
            s.deploy_model(model, np.zeros((1, 64), np.int8))  # golden features through the model's head
        with pytest.raises(DeviceError, match=r"UNSUPPORTED: model: op \d+ TANH"):
            sc.verify(sc.upload(tanh, ImageKind.TFLITE, KEY).slot)
        for what, img in corrupt.items():
            got = []
            for s in (sc, sv):
                try:
                    s.verify(s.upload(img, ImageKind.TFLITE, KEY).slot)
                    got.append("OK")
                except DeviceError as e:
                    got.append(_status_of(e))
                    if s is sc:
                        assert "model: " in str(e) or "head" in str(e), (what, str(e))
            if what in ("truncated", "root offset"):
                assert got == ["MALFORMED", "MALFORMED"], (what, got)
            for s in (sc, sv):  # the board still answers and still runs the confirmed full image
                info = s.hello()
                assert info.raw_input_len == 256, what
                st = s.status()
                assert st.slots[st.confirmed].kind == ImageKind.TFLITE
    finally:
        b.stop()


def test_qemu_firmware_full_model_raw_samples(qemu_fw: Path, ref_models) -> None:
    """The full-model path on the emulated Cortex-M4F (its compiled-in factory head is 10x64, as the digits
    model's): whole-model CONFIRM, raw int8 and float32 samples cached as TFLite Micro's features bit for bit."""
    model, x = ref_models["digits"]
    b = QemuBoard(33).start()
    try:
        s = b.session()
        r = _full_model_session(s, model, x, True, 4)
        _check_full_model_run(r, model, x, True, 33)
        s.close()
    finally:
        b.stop()
