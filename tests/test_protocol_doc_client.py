"""docs/protocol.md against `fedtiny emulate`, through a host written only from the document.

``tests/doc_client.py`` re-implements COBS, CRC-32, the header, every message layout and the host retry
rules from docs/protocol.md; nothing here imports ``fedtiny.link``, ``fedtiny.clients.board`` or ``firmware``. The
expected numbers come from the numeric spec (``fedtiny.ondevice``, docs/ondevice.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import doc_client as dc

from fedtiny.ondevice import (
    FloatHead,
    Int8Head,
    TrainConfig,
    TrainJob,
    dequantize_head,
    head_forward_int8,
    quantize_head,
    train_heads,
    train_heads_fixed,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
KEY = bytes(range(32))
DEVICE_ID = 7


# ------------------------------------------------------------------------------------------------ board


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Board:
    """`fedtiny emulate` as a subprocess; ``restart()`` is a power cut (SIGKILL) and a fresh boot."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "board.flash"
        self.key_file = tmp / "fleet.key"
        self.key_file.write_text(KEY.hex() + "\n")
        self.log = tmp / "board.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "fedtiny.cli",
            "emulate",
            "--listen",
            f"socket://127.0.0.1:{self.port}",
            "--device-id",
            str(DEVICE_ID),
            "--state",
            str(self.state),
            "--fleet-key-file",
            str(self.key_file),
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("emulator did not open its port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> dc.DocClient:
        return dc.DocClient("127.0.0.1", self.port)


@pytest.fixture
def board(tmp_path):
    b = Board(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def expect_status(name: str, fn, *args, **kw) -> str:
    with pytest.raises(dc.DeviceError) as exc:
        fn(*args, **kw)
    assert dc.STATUS_NAMES[exc.value.status] == name, str(exc.value)
    return exc.value.reason


def as_int8_head(p: dc.HeadPatch) -> Int8Head:
    return p.to_int8_head()


def ref_eval(head: Int8Head, feats: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """EVALUATE per the doc: argmax of int8 logits (ties low) and mean CE of the dequantized logits."""
    q = head_forward_int8(head, feats)
    acc = float(np.mean(np.argmax(q, axis=1) == labels))
    z = (np.float32(head.output_scale) * (q.astype(np.float32) - np.float32(head.output_zero_point))).astype(
        np.float64
    )
    z = z - z.max(axis=1, keepdims=True)
    loss = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]
    return acc, float(loss.mean())


# ----------------------------------------------------------------------------------- framing, vectors


def test_crc_and_cobs_primitives():
    assert dc.crc32(b"123456789") == 0xCBF43926
    rng = np.random.default_rng(0)
    for n in (0, 1, 253, 254, 255, 508, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert dc.crc32(data) == zlib.crc32(data)
        for sample in (data, data.replace(b"\x00", b"\x01"), bytes(n)):
            enc = dc.cobs_encode(sample)
            assert 0 not in enc and dc.cobs_decode(enc) == sample
            assert len(enc) <= dc.cobs_max(len(sample))
    # "overhead: 1 byte per 254 plus 1": 254 non-zero bytes end with a 0xFF block and a final 0x01 code
    assert dc.cobs_encode(b"\x01" * 254) == b"\xff" + b"\x01" * 254 + b"\x01"
    assert dc.cobs_decode(b"\xff" + b"\x01" * 254) == b"\x01" * 254  # and the short form decodes the same


def test_doc_vectors_reproduced_by_independent_encoder():
    vecs = {
        v.title.split(":")[0].split(",")[0] + v.title.split(",")[1].split(":")[0]: v
        for v in dc.doc_vectors(DOC)
    }
    assert len(vecs) == 28
    for v in vecs.values():
        fr = dc.parse_decoded(v.decoded)
        assert fr is not None, v.title
        assert fr.decoded() == v.decoded, v.title
        assert fr.wire() == v.wire, v.title
        assert dc.cobs_decode(v.wire[:-1]) == v.decoded and v.wire[-1] == 0
        assert dc.parse_wire(v.wire[:-1]) == fr

    def frame(typ, seq, payload, response=False, status=0):
        return dc.Frame(1, typ, dc.FLAG_RESPONSE if response else 0, status, seq, payload)

    # every vector rebuilt from its description, with the client's own message encoders
    assert frame(dc.HELLO, 1, b"").wire() == vecs["HELLO request seq 1"].wire
    got = dc.HelloInfo.parse(dc.parse_decoded(vecs["HELLO response seq 1"].decoded).payload)
    assert (got.device_id, got.capabilities, got.C, got.D, got.board_name, got.fw_version) == (
        0x12345678,
        0x6B,
        10,
        64,
        "vboard",
        "1.0.0",
    )
    # the fields the title leaves open: max_payload 4096, cache 256 (0 used), 64 KiB slots, no backbone, window 4
    info = dc.HelloInfo(1, 2, 4096, 0x12345678, 0x6B, 10, 64, 256, 0, 65536, 0, 4, 0, "vboard", "1.0.0")
    assert got == info
    assert frame(dc.HELLO, 1, info.encode(), response=True).wire() == vecs["HELLO response seq 1"].wire
    assert (
        frame(dc.STATUS, 0x0100, b"").wire() == vecs["STATUS request seq 0x0100 (header has zero bytes)"].wire
    )
    assert frame(dc.GET_HEAD, 2, dc.blob_read(0, 4088)).wire() == vecs["GET_HEAD request seq 2"].wire

    hp = dc.HeadPatch(
        np.array([[1, 2, 3], [-1, 0, 127]], np.int8),
        np.array([0.5, 0.25], np.float32),
        np.array([1000, -1], np.int32),
        0.125,
        -128,
        0.0625,
        3,
    )
    gh = vecs["GET_HEAD response seq 2"]
    parsed = dc.HeadPatch.parse(dc.parse_decoded(gh.decoded).payload[4:])
    assert (parsed.input_scale, parsed.input_zero_point, parsed.output_scale, parsed.output_zero_point) == (
        0.125,
        -128,
        0.0625,
        3,
    )
    hp.weights = parsed.weights  # the title does not give the weights; take them from the vector
    patch = hp.encode()
    assert parsed.encode() == patch and len(patch) == 20 + 8 * 2 + 2 * 3
    # The vector's BlobPage says total_len 50 while the page (offset 0, max_len 4088) holds the whole
    # 42-byte patch: see test_get_head_vector_total_len. Rebuilt with the vector's own total_len:
    vec_total = struct.unpack_from("<I", dc.parse_decoded(gh.decoded).payload)[0]
    assert frame(dc.GET_HEAD, 2, struct.pack("<I", vec_total) + patch, response=True).wire() == gh.wire

    push = dc.samples_payload(0, [1, 0], np.array([[1, 2, 3], [-1, 0, 127]], np.int8), clear=True)
    assert frame(dc.PUSH_SAMPLES, 3, push).wire() == vecs["PUSH_SAMPLES request seq 3"].wire
    assert (
        frame(dc.TRAIN, 4, dc.train_payload(1, 16, 0.05, 0.9, 0.0, 0.01, 42, 3, 0)).wire()
        == vecs["TRAIN request seq 4"].wire
    )
    assert (
        frame(dc.TRAIN, 9, dc.train_payload(2, 8, 0.05, 0, 0, 0, 42, 3, 1)).wire()
        == vecs["TRAIN request seq 9"].wire
    )
    raw = dc.samples_payload(2, [4], np.array([[0.5, -1.25]], np.float32))
    assert frame(dc.PUSH_SAMPLES, 10, raw).wire() == vecs["PUSH_SAMPLES request seq 10"].wire

    unl = dc.samples_payload(0, [3, dc.NO_LABEL], np.array([[5, -6], [7, 8]], np.int8))
    assert frame(dc.PUSH_SAMPLES, 11, unl).wire() == vecs["PUSH_SAMPLES request seq 11"].wire
    lab = dc.label_payload([(1, 2), (0x01020304, dc.NO_LABEL)])
    assert len(lab) == 2 + 6 * 2 and frame(dc.LABEL, 12, lab).wire() == vecs["LABEL request seq 12"].wire
    assert (
        frame(dc.LABEL, 12, struct.pack("<II", 1, 5), response=True).wire()
        == vecs["LABEL response seq 12"].wire
    )
    pseudo = dc.train_payload(1, 4, 0.05, 0, 0, 0, 42, 3, dc.TRAIN_PSEUDO, pseudo=(2.5, 0.5))
    assert len(pseudo) == 40 and frame(dc.TRAIN, 13, pseudo).wire() == vecs["TRAIN request seq 13"].wire

    inf = dc.infer_payload(0, np.array([5, -6, 127], np.int8))
    assert len(inf) == 4 + 3 and frame(dc.INFER, 14, inf).wire() == vecs["INFER request seq 14"].wire
    ans = struct.pack("<HBBH", 2, 1, 0, 2) + np.array([12, -3, -1, -128], np.int8).tobytes()
    assert frame(dc.INFER, 14, ans, response=True).wire() == vecs["INFER response seq 14"].wire
    inf2 = dc.infer_payload(2, np.array([0.5, -1.25], np.float32))
    assert len(inf2) == 4 + 8 and frame(dc.INFER, 15, inf2).wire() == vecs["INFER request seq 15"].wire
    ans2 = struct.pack("<HBBH", 2, 2, 0, 2) + np.array([4, -4], np.int8).tobytes()
    ans2 += np.array([0.75, 0.25], "<f4").tobytes()
    assert frame(dc.INFER, 15, ans2, response=True).wire() == vecs["INFER response seq 15"].wire
    ans3 = struct.pack("<HBBH", 2, 0, 0, 0) + np.array([-128, 127], np.int8).tobytes()
    assert frame(dc.INFER, 16, ans3, response=True).wire() == vecs["INFER response seq 16"].wire
    lg, ot, out = dc.infer_result(dc.parse_decoded(vecs["INFER response seq 15"].decoded).payload)
    assert lg.tolist() == [4, -4] and ot == 2 and out.tolist() == [0.75, 0.25]

    # STAGE_INPUT: a raw input larger than one frame, in pieces; then used by PUSH_SAMPLES / INFER kinds 3 and 4
    st = dc.stage_input_payload(6, 0, bytes([1, 2, 3, 4]))
    assert (
        len(st) == 8 + 4 and frame(dc.STAGE_INPUT, 17, st).wire() == vecs["STAGE_INPUT request seq 17"].wire
    )
    assert (
        frame(dc.STAGE_INPUT, 17, struct.pack("<I", 4), response=True).wire()
        == vecs["STAGE_INPUT response seq 17"].wire
    )
    bad = frame(dc.STAGE_INPUT, 18, b"staged 4", response=True, status=dc.STATUS_CODES["BAD_OFFSET"])
    assert bad.wire() == vecs["STAGE_INPUT response seq 18"].wire
    ps = dc.staged_samples_payload(3, [2], 6)
    assert (
        len(ps) == 6 + 2 and frame(dc.PUSH_SAMPLES, 19, ps).wire() == vecs["PUSH_SAMPLES request seq 19"].wire
    )
    inf4 = dc.infer_staged_payload(4, 1024)
    assert len(inf4) == 4 and frame(dc.INFER, 20, inf4).wire() == vecs["INFER request seq 20"].wire

    # READ_UPDATE response: rebuild the blob and its HMAC, then verify it like a gateway
    blob = (
        b"FTUP"
        + struct.pack("<BBHHHIIIIf", 1, 0, 1, 2, 0, 7, 1, 3, 100, 0.5)
        + np.array([1.0, -2.0, 0.25], "<f4").tobytes()
    )
    blob += hmac.new(KEY, blob, hashlib.sha256).digest()
    ru = vecs["READ_UPDATE response seq 5"]
    assert frame(dc.READ_UPDATE, 5, struct.pack("<II", 1, len(blob)) + blob, response=True).wire() == ru.wire
    ub = dc.UpdateBlob.parse(dc.parse_decoded(ru.decoded).payload[8:])
    ub.verify(KEY, 7)
    with pytest.raises(ValueError):
        ub.verify(KEY, 8)
    with pytest.raises(ValueError):
        ub.verify(bytes(32), 7)

    img = bytes(range(16))
    assert (
        frame(dc.UPLOAD_BEGIN, 6, dc.upload_begin_payload(1, 0xFF, img, KEY)).wire()
        == vecs["UPLOAD_BEGIN request seq 6"].wire
    )
    assert (
        frame(dc.UPLOAD_CHUNK, 7, struct.pack("<I", 0) + img).wire()
        == vecs["UPLOAD_CHUNK request seq 7"].wire
    )
    assert (
        frame(dc.UPLOAD_CHUNK, 7, struct.pack("<I", 16), response=True).wire()
        == vecs["UPLOAD_CHUNK response seq 7"].wire
    )
    assert (
        frame(dc.VERIFY, 8, b"unsigned image", response=True, status=7).wire()
        == vecs["VERIFY response seq 8"].wire
    )


def test_get_head_vector_total_len():
    gh = next(v for v in dc.doc_vectors(DOC) if v.title.startswith("GET_HEAD response"))
    payload = dc.parse_decoded(gh.decoded).payload
    total, page = struct.unpack_from("<I", payload)[0], payload[4:]
    # BlobPage: min(max_len=4088, total_len - 0, max_payload - 4) bytes from offset 0
    assert len(page) == min(4088, total)


# ------------------------------------------------------------------------------------------ the session


def test_session_against_emulator(board):
    rng = np.random.default_rng(1234)
    c = board.client()

    # -- HELLO
    h = c.hello_()
    assert h.proto_version == 1 and h.n_slots == 2 and 256 <= h.max_payload <= 4096
    assert h.device_id == DEVICE_ID and h.rx_window >= 1 and h.board_name and h.fw_version
    for cap in (dc.CAP_TRAIN, dc.CAP_EVALUATE, dc.CAP_HEAD_PATCH, dc.CAP_FLEET_KEY, dc.CAP_SET_HEAD):
        assert h.capabilities & cap
    assert h.capabilities & (dc.CAP_FLOAT_TRAIN | dc.CAP_FIXED_TRAIN)
    assert h.capabilities & dc.CAP_LABELS
    assert h.capabilities & dc.CAP_INFER
    assert h.capabilities >> 14 == 0  # reserved bits
    assert h.cache_count == 0 and h.cache_capacity >= 40 and h.max_image >= 20 + 8 * h.C + h.C * h.D
    C, D = h.C, h.D

    # -- STATUS: a provisioned board has exactly one CONFIRMED slot, and runs it
    st = c.status()
    assert st.n_slots == 2 and st.confirmed == st.active == h.active_slot
    assert [s.state for s in st.slots].count(dc.CONFIRMED) == 1 and st.slots[
        st.confirmed
    ].state == dc.CONFIRMED
    upload_slot = 1 - st.confirmed

    # -- GET_HEAD in pages (small pages exercise the paging rules) and in one page
    factory = c.get_head(page=100)
    assert c.get_head().encode() == factory.encode() and (factory.C, factory.D) == (C, D)
    if st.slots[st.confirmed].kind == dc.KIND_HEAD_PATCH:  # the factory head is the confirmed slot's image
        assert hashlib.sha256(factory.encode()).digest() == st.slots[st.confirmed].sha256
    total = len(factory.encode())
    assert (
        struct.unpack("<I", c.call(dc.GET_HEAD, dc.blob_read(total, 10))[:4])[0] == total
    )  # offset == total: empty page
    assert c.call(dc.GET_HEAD, dc.blob_read(total, 10))[4:] == b""
    expect_status("MALFORMED", c.call, dc.GET_HEAD, dc.blob_read(total + 1, 10))

    # -- SET_HEAD: a random head, staged in 3 pieces
    head_a = dc.HeadPatch(
        rng.integers(-127, 128, (C, D)).astype(np.int8),
        rng.uniform(0.002, 0.02, C).astype(np.float32),
        rng.integers(-3000, 3000, C).astype(np.int32),
        factory.input_scale,
        factory.input_zero_point,
        0.08,
        -5,
    )
    pa = head_a.encode()
    # `staged` grows with each piece; the completing piece swaps the head in and clears the staging
    # buffer, so it answers staged = 0 (docs/protocol.md clarified)
    assert c.set_head(pa, chunk=300) == [300, 600, 0]
    assert c.get_head().encode() == pa
    expect_status("BAD_OFFSET", c.call, dc.SET_HEAD, struct.pack("<II", len(pa), 10) + pa[10:20])
    wrong = dc.HeadPatch(
        head_a.weights[:, :-1].copy(),
        head_a.weight_scales,
        head_a.bias,
        head_a.input_scale,
        head_a.input_zero_point,
        0.08,
        -5,
    ).encode()
    expect_status("SHAPE_MISMATCH", c.call, dc.SET_HEAD, struct.pack("<II", len(wrong), 0) + wrong)
    assert c.get_head().encode() == pa  # refused patches do not touch the running head

    # -- PUSH_SAMPLES (int8 features)
    n = 40
    feats = rng.integers(-128, 128, (n, D)).astype(np.int8)
    labels = rng.integers(0, C, n).astype(np.int64)
    assert c.push_samples(0, labels[:5], feats[:5]) == (5, 5)
    assert c.push_samples(0, labels, feats, clear=True) == (n, 5 + n)  # CLEAR: cache restarts at slot 0
    assert c.hello_().cache_count == n
    expect_status("MALFORMED", c.push_samples, 0, [C], feats[:1])
    expect_status("SHAPE_MISMATCH", c.push_samples, 0, [0], feats[:1, :-1])
    if not h.capabilities & dc.CAP_RAW_SAMPLES:
        expect_status("UNSUPPORTED", c.push_samples, 1, [0], feats[:1])
    assert c.hello_().cache_count == n  # refused pushes cached nothing

    # -- EVALUATE: int8 inference of the running head (docs/ondevice.md §1)
    ia = as_int8_head(head_a)
    acc, loss = ref_eval(ia, feats, labels)
    n_ev, acc_ev, loss_ev = c.evaluate(0)
    assert n_ev == n and acc_ev == pytest.approx(acc, abs=1e-6) and loss_ev == pytest.approx(loss, rel=1e-5)
    acc10, loss10 = ref_eval(ia, feats[:10], labels[:10])
    assert c.evaluate(10) == pytest.approx((10, acc10, loss10), rel=1e-5)

    # -- TRAIN (float32), retried with the same seq: answered from the cache, not trained twice
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=0.001, prox_mu=0.01)
    seed, rnd = 42, 3
    train_req = dc.train_payload(
        cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.prox_mu, seed, rnd, 0
    )
    fr = c.exchange(dc.TRAIN, train_req)
    uid, n_ex, tr_loss = struct.unpack("<IIf", fr.payload)
    assert uid != 0
    again = c.exchange(dc.TRAIN, train_req, seq=fr.seq)  # identical request, same seq (a retry)
    assert again.payload == fr.payload and again.status == 0  # not UPDATE_PENDING: it was not re-executed
    expect_status("UPDATE_PENDING", c.call, dc.TRAIN, train_req)  # a new seq is a new request

    fh = dequantize_head(ia)
    ref = train_heads(
        fh.weights,
        fh.bias,
        feats[None],
        labels[None],
        np.array([n]),
        TrainJob(
            cfg,
            input_scale=ia.input_scale,
            input_zero_point=ia.input_zero_point,
            seed=seed,
            round_=rnd,
            device_ids=np.array([DEVICE_ID]),
        ),
    )
    assert np.float32(tr_loss).view(np.uint32) == ref.loss[0].view(np.uint32)  # bit for bit (ondevice.md 3a)
    assert n_ex == n  # the doc leaves num_examples open; the board reports the cached samples trained on

    # -- READ_UPDATE in pages, verified like a gateway
    ub, pages = c.read_update(page=1000)
    assert pages > 1
    ub.verify(KEY, DEVICE_ID)
    with pytest.raises(ValueError):
        ub.verify(bytes(reversed(KEY)), DEVICE_ID)
    with pytest.raises(ValueError):
        ub.verify(KEY, DEVICE_ID + 1)
    assert (ub.update_id, ub.round, ub.num_examples, ub.C, ub.D) == (uid, rnd, n, C, D)
    assert ub.loss == tr_loss
    assert np.array_equal(np.asarray(ub.weights, np.float32).view(np.uint32), ref.weights[0].view(np.uint32))
    assert np.array_equal(np.asarray(ub.bias, np.float32).view(np.uint32), ref.bias[0].view(np.uint32))
    assert c.get_head().encode() == pa  # TRAIN does not change the running head

    # -- UPDATE_ACK: wrong id refused, right id OK, repeated ACK OK, then nothing pending
    expect_status("NO_UPDATE", c.call, dc.UPDATE_ACK, struct.pack("<I", uid ^ 0x5A5A))
    c.update_ack(uid)
    c.update_ack(uid)
    expect_status("NO_UPDATE", c.read_update)

    # -- TRAIN fixed point (§3b), bit-exact
    # the reference must get lr as it travels (f32): r = lr * s_in^2 * 2^8 is computed in double from it
    uid2 = None
    fcfg = TrainConfig(epochs=1, batch_size=16, lr=float(np.float32(0.1)))
    if h.capabilities & dc.CAP_FIXED_TRAIN:
        expect_status("UNSUPPORTED", c.train, 1, 16, 0.1, 0.9, 0, 0, seed, rnd + 1, 1)  # FIXED + momentum
        expect_status("UNSUPPORTED", c.train, 1, 16, 0.1, 0, 0, 0, seed, rnd + 1, 1 | 4)  # reserved flag bit
        uid2, _, loss2 = c.train(1, 16, 0.1, 0, 0, 0, seed, rnd + 1, 1)
        assert uid2 not in (0, uid)
        ub2, _ = c.read_update()
        ub2.verify(KEY, DEVICE_ID)
        fref = train_heads_fixed(
            fh.weights,
            fh.bias,
            feats[None],
            labels[None],
            np.array([n]),
            TrainJob(
                fcfg,
                input_scale=ia.input_scale,
                input_zero_point=ia.input_zero_point,
                seed=seed,
                round_=rnd + 1,
                device_ids=np.array([DEVICE_ID]),
            ),
        )
        np.testing.assert_array_equal(ub2.weights, fref.weights[0])
        np.testing.assert_array_equal(ub2.bias, fref.bias[0])
        assert loss2 == pytest.approx(float(fref.loss[0]), rel=1e-6)
        c.update_ack(uid2)
    # the 28-byte TRAIN (before `flags`) is read as flags = 0
    uid3, n3, _ = c.train(1, 16, 0.05, 0, 0, 0, seed, rnd + 2, None)
    assert n3 == n and uid3 not in (0, uid)
    c.update_ack(c.read_update()[0].update_id)

    # -- a retried PUSH_SAMPLES (same seq, RETRY flag) hits the response cache: nothing pushed twice
    more = rng.integers(-128, 128, (3, D)).astype(np.int8)
    fr = c.exchange(dc.PUSH_SAMPLES, dc.samples_payload(0, [1, 2, 3], more))
    cached, pushed = struct.unpack("<II", fr.payload)
    assert cached == n + 3
    raw_retry = dc.Frame(1, dc.PUSH_SAMPLES, dc.FLAG_RETRY, 0, fr.seq, dc.samples_payload(0, [1, 2, 3], more))
    c.send_raw(raw_retry.wire())
    resp = c.recv_frame(time.monotonic() + 2)
    assert isinstance(resp, dc.Frame) and resp.seq == fr.seq and resp.payload == fr.payload
    assert c.hello_().cache_count == n + 3
    # same seq, different payload: a new request, executed
    c2 = c.exchange(dc.PUSH_SAMPLES, dc.samples_payload(0, [4], more[:1]), seq=c.seq)
    assert struct.unpack("<II", c2.payload) == (n + 4, pushed + 1)

    # -- malformed / foreign frames
    bad = c.exchange(dc.STATUS, b"", version=2, raise_on_error=False)
    assert dc.STATUS_NAMES[bad.status] == "BAD_VERSION" and bad.version == 1 and bad.type == dc.STATUS
    assert dc.STATUS_NAMES[c.exchange(0x7E, b"", raise_on_error=False).status] == "UNKNOWN_TYPE"
    assert dc.STATUS_NAMES[c.exchange(dc.HELLO, b"\x00", raise_on_error=False).status] == "MALFORMED"
    seq = c.next_seq()
    c.send_raw(dc.Frame(1, dc.HELLO, dc.FLAG_RESPONSE, 0, seq, b"").wire())  # RESPONSE flag: ignored
    good = dc.Frame(1, dc.HELLO, 0, 0, seq, b"").decoded()
    c.send_raw(dc.cobs_encode(good[:-1] + bytes([good[-1] ^ 1])) + b"\x00")  # bad CRC: dropped silently
    c.send_raw(b"\x00\x00")  # empty frames: ignored
    assert c.recv_frame(time.monotonic() + 0.3) is None
    # a request whose decoded frame ends with a 254-byte non-zero run, in both COBS end forms
    for short in (False, True):
        for pad in range(1, 256):
            payload = bytes([pad]) * 250
            req = dc.Frame(1, dc.HELLO, 0, 0, c.next_seq(), payload).decoded()
            if 0 not in req[-254:]:
                break
        enc = dc.cobs_encode(req)
        assert enc.endswith(b"\x01")
        c.send_raw((enc[:-1] if short else enc) + b"\x00")
        resp = c.recv_frame(time.monotonic() + 2)
        assert (
            isinstance(resp, dc.Frame) and resp.seq == c.seq and dc.STATUS_NAMES[resp.status] == "MALFORMED"
        )
    c.close()

    # ------------------------------------------------------------------ uploads (A/B slots, section 5-6)
    c = board.client()
    h = c.hello_()
    chunk = 64
    # the image: the float update re-quantized as the converter would (§4), calibrated on the cached features
    new_int8 = quantize_head(FloatHead(ub.weights, ub.bias), ia.input_scale, ia.input_zero_point, feats)
    image = dc.HeadPatch(
        new_int8.weights,
        new_int8.weight_scales,
        new_int8.bias,
        new_int8.input_scale,
        new_int8.input_zero_point,
        new_int8.output_scale,
        new_int8.output_zero_point,
    ).encode()
    assert image != factory.encode()

    # unsigned and wrongly signed images are refused at BEGIN
    assert "unsigned" in expect_status("AUTH_FAILED", c.upload_begin, 1, 0xFF, image, None)
    expect_status("AUTH_FAILED", c.upload_begin, 1, 0xFF, image, bytes(reversed(KEY)))
    expect_status("BAD_STATE", c.upload_begin, 1, st.confirmed, image, KEY)  # never the confirmed slot
    expect_status("NO_SPACE", c.upload_begin, 1, 0xFF, bytes(h.max_image + 1), KEY)
    if not h.capabilities & dc.CAP_FULL_IMAGE:
        # a board that cannot run full images answers UNSUPPORTED to UPLOAD_BEGIN kind 2. (The virtual board
        # advertises FULL_IMAGE and accepts kind 2 even without a backbone, raw_input_len = 0.)
        expect_status("UNSUPPORTED", c.upload_begin, 2, 0xFF, b"TFL3" * 100, KEY)

    # a tampered image: the tag is right for the declared SHA-256, the bytes sent are not
    tampered = bytearray(image)
    tampered[len(image) // 2] ^= 0x40
    us = c.upload_begin(1, 0xFF, image, KEY, restart=True)
    assert (us.slot, us.state, us.received, us.total_len) == (upload_slot, dc.RECEIVING, 0, len(image))
    assert c.upload_chunks_pipelined(bytes(tampered), 0, chunk, h.rx_window) == len(image)
    assert c.upload_status().received == len(image)
    expect_status("HASH_MISMATCH", c.verify, upload_slot)
    us = c.upload_status()
    assert (us.state, us.received) == (dc.RECEIVING, 0)  # VERIFY fail: stays RECEIVING, received reset to 0
    s = c.status().slots[upload_slot]
    assert (s.state, s.received) == (dc.RECEIVING, 0)
    expect_status("BAD_STATE", c.activate, upload_slot)  # only a VERIFIED slot can run

    # the real upload, interrupted by a dropped link with chunks in flight
    us = c.upload_begin(1, 0xFF, image, KEY)
    # same (kind, total_len, sha256) as the RECEIVING slot: a resume, even with nothing kept (resumed = 1)
    assert (us.slot, us.resumed, us.received) == (upload_slot, 1, 0)
    c.upload_chunks_pipelined(image, 0, chunk, h.rx_window, stop_after=5)
    c.drop()  # the host gives up with up to rx_window chunks unanswered; their answers are never read
    c = board.client()
    h = c.hello_()
    us = c.upload_status()
    assert 0 < us.received < len(image) and us.received % chunk == 0
    assert us.prefix_crc32 == zlib.crc32(image[: us.received]) and us.total_len == len(image)
    r1 = us.received
    # a wrongly signed BEGIN (even with RESTART) is refused before anything is erased
    expect_status("AUTH_FAILED", c.upload_begin, 1, 0xFF, image, bytes(reversed(KEY)), restart=True)
    assert c.upload_status().received == r1

    # chunk rules (section 6 step 3): gaps and duplicates answer `received`, overruns are MALFORMED
    assert c.upload_chunk(r1 + chunk, image[r1 + chunk : r1 + 2 * chunk]) == r1
    if r1 >= chunk:
        assert c.upload_chunk(r1 - chunk, image[r1 - chunk : r1]) == r1
    expect_status("MALFORMED", c.upload_chunk, len(image) - 2, b"\x01\x02\x03")
    assert c.upload_chunk(r1, image[r1 : r1 + chunk]) == r1 + chunk

    # a power cut (SIGKILL) while chunks are in flight; BEGIN resumes from the persisted `received`
    c.upload_chunks_pipelined(image, r1 + chunk, chunk, h.rx_window, stop_after=3)
    board.restart()
    c = board.client()
    h = c.hello_()
    assert h.active_slot == st.confirmed and h.cache_count == 0
    assert c.get_head().encode() == factory.encode()  # SET_HEAD was volatile
    us = c.upload_begin(1, 0xFF, image, KEY)
    assert us.resumed == 1 and us.slot == upload_slot and r1 + chunk <= us.received <= r1 + 4 * chunk
    assert us.prefix_crc32 == zlib.crc32(image[: us.received])
    assert c.upload_chunks_pipelined(image, us.received, chunk, h.rx_window) == len(image)

    slot, state, sha = c.verify(upload_slot)
    assert (slot, state, sha) == (upload_slot, dc.VERIFIED, hashlib.sha256(image).digest())
    s = c.status().slots[upload_slot]
    assert (s.state, s.kind, s.total_len, s.received, s.sha256) == (
        dc.VERIFIED,
        1,
        len(image),
        len(image),
        sha,
    )
    us = c.upload_begin(1, 0xFF, image, KEY)  # BEGIN of the VERIFIED image: resumed, received = total_len
    assert (us.resumed, us.state, us.received) == (1, dc.VERIFIED, len(image))
    assert c.upload_chunk(0, image[:chunk]) == len(
        image
    )  # chunks of a VERIFIED slot: next_offset = total_len

    # -- ACTIVATE -> TESTING, the head patch runs without a reboot
    ss = c.activate(upload_slot)
    assert ss.active == upload_slot and ss.confirmed == st.confirmed
    assert ss.slots[upload_slot].state == dc.TESTING and ss.slots[st.confirmed].state == dc.CONFIRMED
    assert c.activate(upload_slot).slots[upload_slot].state == dc.TESTING  # already TESTING: OK
    assert c.get_head().encode() == image
    expect_status("BAD_STATE", c.upload_begin, 1, upload_slot, image, KEY)  # never a TESTING slot

    # -- ROLLBACK and a reset while TESTING: the confirmed slot runs again, the test slot is VERIFIED
    rb = c.rollback()
    assert rb.active == st.confirmed and rb.slots[upload_slot].state == dc.VERIFIED
    # (REVERTED is not asserted after ROLLBACK: section 5 says ROLLBACK sets it, the flag's definition in
    # SlotStatus says "the last boot reverted"; the board sets it on a reboot only.)
    c.status()
    assert c.get_head().encode() == factory.encode()
    c.activate(upload_slot)
    board.restart()
    c = board.client()
    h = c.hello_()
    assert h.active_slot == st.confirmed
    s1 = c.status()
    assert s1.slots[upload_slot].state == dc.VERIFIED and s1.active == st.confirmed
    assert s1.flags & 1 and not c.status().flags & 1  # REVERTED until the next STATUS
    assert c.activate(upload_slot).slots[upload_slot].state == dc.TESTING

    # -- CONFIRM with golden vectors: a wrong one fails and changes nothing, the right ones confirm
    gin = rng.integers(-128, 128, (4, D)).astype(np.int8)
    gout = head_forward_int8(new_int8, gin)
    off = gout.copy()
    off[2, 1] = np.int8(int(off[2, 1]) + (2 if off[2, 1] < 126 else -2))
    reason = expect_status("SELFTEST_FAILED", c.confirm, upload_slot, 1, gin, off)
    assert reason  # the doc: the reason names the vector and channel
    assert c.status().slots[upload_slot].state == dc.TESTING
    assert c.confirm(upload_slot, 2, gin, off).slots[upload_slot].state == dc.CONFIRMED  # within tolerance 2
    ss = c.confirm(upload_slot, 0, gin, gout)  # already CONFIRMED and active: OK
    assert ss.active == ss.confirmed == upload_slot

    # -- STATUS: the new slot is confirmed, the factory slot is kept VERIFIED as a fallback
    ss = c.status()
    assert (ss.active, ss.confirmed) == (upload_slot, upload_slot)
    assert ss.slots[upload_slot].state == dc.CONFIRMED and ss.slots[st.confirmed].state == dc.VERIFIED
    assert c.rollback().active == upload_slot  # nothing under test: OK, no change
    expect_status("BAD_STATE", c.upload_begin, 1, upload_slot, image, KEY)

    # -- and it survives a reset
    board.restart()
    c = board.client()
    h = c.hello_()
    assert h.active_slot == upload_slot and h.cache_count == 0
    assert c.get_head().encode() == image
    ss = c.status()
    assert (ss.active, ss.confirmed, ss.flags & 1) == (upload_slot, upload_slot, 0)
    expect_status("CACHE_EMPTY", c.evaluate, 0)  # the cache is RAM
    expect_status("NO_UPDATE", c.read_update)
    # update ids are never repeated on a device, across resets too
    c.push_samples(0, labels[:8], feats[:8])
    uid4, n4, _ = c.train(1, 4, 0.05, 0, 0, 0, seed, rnd + 3, 0)
    assert n4 == 8 and uid4 not in (0, uid, uid2, uid3)
    new_acc, new_loss = ref_eval(new_int8, feats[:8], labels[:8])
    assert c.evaluate(0) == pytest.approx((8, new_acc, new_loss), rel=1e-5)  # the confirmed upload runs
    # INFER: the running head's logits of int8 features (no backbone: no model output), nothing cached
    for k in range(3):
        lg, ot, out = c.infer(0, feats[k])
        assert (
            ot == 0 and len(out) == 0 and np.array_equal(lg, head_forward_int8(new_int8, feats[k : k + 1])[0])
        )
    expect_status("SHAPE_MISMATCH", c.call, dc.INFER, dc.infer_payload(0, feats[0][:-1]))
    expect_status("UNSUPPORTED", c.call, dc.INFER, dc.infer_payload(1, feats[0]))
    expect_status("MALFORMED", c.call, dc.INFER, dc.infer_payload(0, feats[0])[:-1])
    assert c.hello_().cache_count == 8
    # STAGE_INPUT: pieces, a lost one answered BAD_OFFSET with the staged length, resumed; without a backbone the
    # staged kinds are UNSUPPORTED as the raw ones, and the cache is untouched
    if c.hello.capabilities & dc.CAP_STAGED_INPUT:
        big = bytes(range(256)) * 40  # 10,240 bytes: more than one frame
        assert c.stage_input(big[:1000], piece=300) == (1000, 0)
        assert c.stage_input(big, piece=3000, start=3000) == (len(big), 1)  # restarted from "staged 0"
        assert (
            expect_status("BAD_OFFSET", c.call, dc.STAGE_INPUT, dc.stage_input_payload(10, 4, b"x"))
            == "staged 0"
        )
        expect_status("NO_SPACE", c.call, dc.STAGE_INPUT, dc.stage_input_payload(0, 0, b""))
        expect_status("MALFORMED", c.call, dc.STAGE_INPUT, dc.stage_input_payload(4, 3, b"xy"))
        expect_status("UNSUPPORTED", c.call, dc.PUSH_SAMPLES, dc.staged_samples_payload(3, [1], len(big)))
        expect_status("UNSUPPORTED", c.call, dc.INFER, dc.infer_staged_payload(4, len(big) // 4))
        assert c.hello_().cache_count == 8

    # -- labels: a sample pushed without one, a late label by sample id, pseudo-labels at TRAIN
    ub, _ = c.read_update()
    c.update_ack(ub.update_id)
    cached, pushed = c.push_samples(0, [dc.NO_LABEL, dc.NO_LABEL], feats[8:10])
    assert cached == 10  # the ids of the two: pushed - 2, pushed - 1
    expect_status("MALFORMED", c.call, dc.LABEL, dc.label_payload([(pushed - 2, C)]))
    assert c.label([(pushed - 2, 1), (pushed + 5, 0), (pushed - 1, 2), (pushed - 1, dc.NO_LABEL)]) == (3, 9)
    y9 = np.append(labels[:8], 1)
    assert c.evaluate(0) == pytest.approx(
        (9,) + ref_eval(new_int8, feats[:9], y9), rel=1e-5
    )  # slot 9 skipped
    expect_status("MALFORMED", c.call, dc.TRAIN, dc.train_payload(1, 4, 0.05, 0, 0, 0, 1, 1, dc.TRAIN_PSEUDO))
    expect_status(
        "MALFORMED", c.call, dc.TRAIN, dc.train_payload(1, 4, 0.05, 0, 0, 0, 1, 1, 0, pseudo=(0.0, 0.5))
    )
    expect_status(
        "MALFORMED",
        c.call,
        dc.TRAIN,
        dc.train_payload(1, 4, 0.05, 0, 0, 0, 1, 1, dc.TRAIN_PSEUDO, pseudo=(0.0, 0.0)),
    )
    # a margin far below any: every unlabelled slot is pseudo-labelled, all 10 train
    _, n5, _ = c.train(1, 4, 0.05, 0, 0, 0, seed, rnd + 4, dc.TRAIN_PSEUDO, pseudo=(-1e30, 0.5))
    assert n5 == 10
    c.close()


def test_board_survives_link_reset_with_answers_in_flight(board):
    image = bytes(range(256)) * 3
    for _ in range(40):
        c = board.client()
        h = c.hello_()
        c.upload_begin(1, 0xFF, image, KEY, restart=True)
        c.upload_chunks_pipelined(image, 0, 64, h.rx_window, stop_after=5)
        c.close()  # unread answers in the socket: the kernel sends RST
        time.sleep(0.01)
        assert board.proc.poll() is None, f"emulator exited with {board.proc.returncode}"
    c = board.client()
    assert c.hello_().device_id == DEVICE_ID
    c.close()


def test_blob_pages_fill_the_response_up_to_max_payload(tmp_path):
    """BlobPage room (section 4): GET_HEAD pages carry max_payload - 4 bytes, READ_UPDATE pages max_payload - 8
    (its update_id comes first); a virtual board with max_payload 256 cuts a 740-byte head and a 2,664-byte
    update into such pages, which the document's client reads with max_len 4088."""
    import threading

    from fedtiny.clients.board.config import BoardConfig
    from fedtiny.clients.board.server import serve_board

    stop, ready = threading.Event(), threading.Event()
    addr: list[str] = []

    def on_ready(a: str) -> None:
        addr.append(a)
        ready.set()

    port = _free_port()
    th = threading.Thread(
        target=serve_board,
        args=(f"socket://127.0.0.1:{port}", str(tmp_path / "b.flash"), DEVICE_ID, KEY),
        kwargs={"cfg": BoardConfig(max_payload=256), "stop": stop, "ready": on_ready},
        daemon=True,
    )
    th.start()
    try:
        assert ready.wait(20)
        c = dc.DocClient("127.0.0.1", port)
        h = c.hello_()
        assert h.max_payload == 256
        head = c.get_head(page=4088)  # the client checks every page's length against the room
        assert (head.C, head.D) == (h.C, h.D)
        p = c.call(dc.GET_HEAD, dc.blob_read(0, 4088))
        assert len(p) == 256  # u32 total_len + 252 bytes
        rng = np.random.default_rng(3)
        x = rng.integers(-128, 128, (3, h.D), dtype=np.int8)
        c.push_samples(0, [0, 1, 2], x, clear=True)  # 6 + 6 + 3 * 64 bytes: within 256
        c.train(1, 3, 0.05, 0.0, 0.0, 0.0, 1, 1)
        blob, pages = c.read_update(page=4088)
        assert pages == -(-(32 + 4 * h.C * h.D + 4 * h.C + 32) // 248)
        p = c.call(dc.READ_UPDATE, dc.blob_read(0, 4088))
        assert len(p) == 256  # u32 update_id + u32 total_len + 248 bytes
        c.close()
    finally:
        stop.set()
        th.join(10)
