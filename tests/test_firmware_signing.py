"""Issue 10 on the C host firmware (`fedtiny-fw`): Ed25519-signed images, trusted keys (KEYS / KEY_CHANGE),
anti-rollback from the signed security counter and per-device update keys, answered as the virtual board answers
the same sequence (status and reason), and power cuts at every flash write of a key change.

Needs cc + make (the host firmware; Monocypher is fetched from PyPI by `make -C firmware third-party`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtiny.clients.board.device import BoardConfig, VirtualBoard, default_head
from fedtiny.errors import DeviceError, LinkError, UpdateRejected
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import UPLOAD_SIGNED, Cap, ImageKind, MsgType, TrainRequest, UploadBegin
from fedtiny.link.session import BoardSession
from fedtiny.link.signing import (
    KEY_ADD,
    KEY_RETIRE,
    KeyChange,
    KeySet,
    device_key,
    key_hash,
    public_pem,
    raw_public,
    sign_image,
    vector_keys,
)
from fedtiny.link.transport import InProcessTransport, open_transport
from fedtiny.ondevice import head_forward_int8

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
EXE = FW / "build" / "host" / "fedtiny-fw"
FLEET = bytes(range(32))  # the host firmware's compiled-in test fleet key
DEV = 5
MASTER = bytes(range(100, 132))
K1, K2 = vector_keys()
K3 = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))  # never trusted
RNG = np.random.default_rng(10)
FEATS = RNG.integers(-128, 128, (40, 64)).astype(np.int8)
LABELS = RNG.integers(0, 10, 40)


@pytest.fixture(scope="module")
def fw() -> Path:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("make and cc are needed to build the host firmware")
    if subprocess.run(["make", "-C", str(FW), "third-party"], capture_output=True).returncode != 0:
        pytest.skip("monocypher could not be fetched from PyPI (pip download pymonocypher)")
    r = subprocess.run(["make", "-C", str(FW), "build/host/fedtiny-fw"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return EXE


class CBoard:
    """fedtiny-fw on a TCP port with its flash in a file."""

    def __init__(self, exe: Path, flash: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(exe), "--tcp", "0", "--flash", str(flash), "--device-id", str(DEV), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        m = re.search(r"(socket://\S+)", self.proc.stdout.readline())
        assert m, self.proc.stderr.read() if self.proc.stderr else "no output"
        self.uri = m.group(1)

    def session(self, timeout: float = 2.0, retries: int = 8) -> BoardSession:
        s = BoardSession(open_transport(self.uri), timeout, retries, key=FLEET, seed=1)
        s.hello()
        return s

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(5)


@pytest.fixture
def boards(fw: Path, tmp_path: Path) -> Iterator[tuple[CBoard, BoardSession, BoardSession, Path]]:
    """A C board and a virtual board, both trusting key 1 and holding device 5's update key."""
    (tmp_path / "k1.pub.pem").write_bytes(public_pem(K1))
    (tmp_path / "board.key").write_text(device_key(MASTER, DEV).hex() + "\n")
    cb = CBoard(
        fw,
        tmp_path / "c.flash",
        "--trust-key",
        str(tmp_path / "k1.pub.pem"),
        "--device-key-file",
        str(tmp_path / "board.key"),
    )
    vb = VirtualBoard(
        BoardConfig(
            device_id=DEV,
            fleet_key=FLEET,
            cache_capacity=200,
            trust_keys=(raw_public(K1),),
            device_key=device_key(MASTER, DEV),
        )
    )
    sv = BoardSession(InProcessTransport(vb), key=FLEET, seed=1)
    sv.hello()
    try:
        yield cb, cb.session(), sv, tmp_path
    finally:
        cb.stop()


def answer(fn: Callable[[BoardSession], object], s: BoardSession) -> str:
    try:
        fn(s)
        return "OK"
    except DeviceError as e:
        return str(e).split(": ", 1)[1]  # "STATUS: reason" (without the message type)


def same(sc: BoardSession, sv: BoardSession, fn: Callable[[BoardSession], object]) -> str:
    """Run fn on both boards; their answers (status and reason) must be identical. Returns it."""
    a, b = answer(fn, sc), answer(fn, sv)
    assert a == b, f"C board: {a!r}, virtual board: {b!r}"
    return a


def upload_verify(image: bytes, declared: int | None = None) -> Callable[[BoardSession], object]:
    """UPLOAD (flag SIGNED, the security counter of the signed TLV or `declared`) then VERIFY."""

    def run(s: BoardSession) -> object:
        if declared is not None:
            ub = UploadBegin(
                ImageKind.HEAD_PATCH,
                0xFF,
                UPLOAD_SIGNED,
                len(image),
                hashlib.sha256(image).digest(),
                bytes(32),
                declared,
            )
            s.request(MsgType.UPLOAD_BEGIN, ub.encode())
            s.request(MsgType.UPLOAD_CHUNK, struct.pack("<I", 0) + image)
            return s.verify(s.upload_status().slot)
        return s.verify(s.upload(image).slot)

    return run


def test_signed_deploy_refusals_and_downgrade_alike(boards) -> None:
    cb, sc, sv, _ = boards
    caps = Cap.SIGNED_IMAGES | Cap.DEVICE_KEY
    assert sc.info and sv.info
    assert int(sc.info.capabilities) & caps == int(sv.info.capabilities) & caps == caps
    assert sc.keys() == sv.keys() == KeySet(4, 0, [bytes.fromhex(KEYHASH1)])
    head = default_head()
    h2, h3 = head.with_(bias=head.bias + 7), head.with_(bias=head.bias - 9)
    g = FEATS[:4]
    patch2 = encode_head_patch(h2)
    # an HMAC-tagged image on a board with public keys: refused at BEGIN
    assert same(sc, sv, lambda s: s.upload(patch2, security_counter=2)).startswith(
        "AUTH_FAILED: this board accepts"
    )
    # signed by a key the board does not trust: VERIFY refuses it, the slot is marked bad
    r = same(sc, sv, upload_verify(sign_image(patch2, K3, 2)))
    assert r == "AUTH_FAILED: signed image: signed by a key this board does not trust"
    # a declared counter that is not the signed one
    r = same(sc, sv, upload_verify(sign_image(patch2, K1, 2), declared=5))
    assert r == "AUTH_FAILED: declared security counter 5 differs from the signed 2"
    # a tampered signed image (payload byte flipped, SHA-256 of the upload declared for the tampered bytes)
    bad = bytearray(sign_image(patch2, K1, 2))
    bad[40] ^= 1
    assert (
        same(sc, sv, upload_verify(bytes(bad)))
        == "AUTH_FAILED: signed image: SHA-256 TLV does not match the image"
    )
    # the signed deploy: accepted, tested and confirmed on both; the same head runs
    assert same(sc, sv, lambda s: s.deploy_head(h2, g, security_counter=2, signing_key=K1)) == "OK"
    assert sc.status() == sv.status()
    assert np.array_equal(sc.get_head().weights, sv.get_head().weights)
    assert sc.get_head().bias.tolist() == sv.get_head().bias.tolist() == h2.bias.tolist()
    # an older signed image: DOWNGRADE at BEGIN; an equal counter is accepted
    assert same(sc, sv, lambda s: s.deploy_head(h3, g, security_counter=1, signing_key=K1)).startswith(
        "DOWNGRADE"
    )
    assert same(sc, sv, lambda s: s.deploy_head(h3, g, security_counter=2, signing_key=K1)) == "OK"
    assert sc.status() == sv.status()
    # the floor and the confirmed signed image survive a reset
    sc.reset()  # the host firmware reboots in place, keeping the link
    sc.hello()
    assert sc.get_head().bias.tolist() == h3.bias.tolist()
    assert same(sc, sv, lambda s: s.deploy_head(h2, g, security_counter=1, signing_key=K1)).startswith(
        "DOWNGRADE"
    )


def test_key_change_alike_and_persisted(boards, fw: Path) -> None:
    cb, sc, sv, tmp = boards
    g = FEATS[:4]
    h = default_head().with_(bias=default_head().bias + 3)
    add2 = KeyChange(KEY_ADD, DEV, 1, raw_public(K2)).sign(K1)
    assert same(sc, sv, lambda s: s.key_change(KeyChange(KEY_ADD, DEV + 1, 1, raw_public(K2)).sign(K1))) == (
        f"AUTH_FAILED: key change for device {DEV + 1}, this is device {DEV}"
    )
    assert same(sc, sv, lambda s: s.key_change(KeyChange(KEY_ADD, 0, 1, raw_public(K2)).sign(K3))).startswith(
        "AUTH_FAILED: key change signed by a key this board does not trust"
    )
    assert same(
        sc, sv, lambda s: s.key_change(KeyChange(KEY_RETIRE, 0, 1, raw_public(K1)).sign(K1))
    ).startswith("BAD_STATE")
    assert same(sc, sv, lambda s: s.request(MsgType.KEY_CHANGE, add2.encode()[:-1])).startswith("MALFORMED")
    assert same(sc, sv, lambda s: s.request(MsgType.KEYS, b"x")).startswith("MALFORMED")
    assert same(sc, sv, lambda s: s.key_change(add2)) == "OK"
    assert same(sc, sv, lambda s: s.key_change(add2)) == "OK"  # the same change again: nothing written
    assert sc.keys() == sv.keys() and sc.keys().counter == 1 and len(sc.keys().hashes) == 2
    # rotate: deploy with key 2, retire key 1 (signed by key 2); key 1's images and changes then fail
    assert same(sc, sv, lambda s: s.deploy_head(h, g, security_counter=1, signing_key=K2)) == "OK"
    assert same(sc, sv, lambda s: s.key_change(KeyChange(KEY_RETIRE, 0, 2, raw_public(K1)).sign(K2))) == "OK"
    assert same(sc, sv, lambda s: s.key_change(add2)).startswith("AUTH_FAILED")
    r = same(sc, sv, upload_verify(sign_image(encode_head_patch(h), K1, 1)))
    assert r == "AUTH_FAILED: signed image: signed by a key this board does not trust"
    replay = KeyChange(KEY_ADD, 0, 2, raw_public(K3)).sign(K2)
    assert (
        same(sc, sv, lambda s: s.key_change(replay))
        == "DOWNGRADE: key counter 2 <= the board's 2 (replayed change)"
    )
    assert sc.keys() == sv.keys()
    # the stored set is the board's: a restart with another --trust-key keeps it
    keys = sc.keys()
    cb.stop()
    (tmp / "k3.pub.pem").write_bytes(public_pem(K3))
    cb2 = CBoard(fw, tmp / "c.flash", "--trust-key", str(tmp / "k3.pub.pem"))
    try:
        assert cb2.session().keys() == keys
    finally:
        cb2.stop()


def test_update_tagged_with_the_device_key(boards) -> None:
    _, sc, sv, _ = boards
    req = TrainRequest(1, 8, 0.05, 0.0, 0.0, 0.0, 1, 2)
    for s in (sc, sv):
        s.push_samples(FEATS, LABELS, clear=True)
        s.train(req)
        upd = s.read_update(verify_key=device_key(MASTER, DEV))  # the per-device key verifies it
        assert upd.device_id == DEV
        with pytest.raises(UpdateRejected, match="bad HMAC tag"):
            s.read_update(verify_key=FLEET)  # not the fleet key
        with pytest.raises(UpdateRejected, match="bad HMAC tag"):
            s.read_update(verify_key=device_key(MASTER, DEV + 1))  # nor another board's
        s.ack_update(upd.update_id)


def test_hmac_board_answers_keys_like_the_virtual_board(fw: Path, tmp_path: Path) -> None:
    cb = CBoard(fw, tmp_path / "c.flash")
    vb = VirtualBoard(BoardConfig(device_id=DEV, fleet_key=FLEET))
    sv = BoardSession(InProcessTransport(vb), key=FLEET, seed=1)
    sv.hello()
    try:
        sc = cb.session()
        assert sc.keys() == sv.keys() == KeySet(4, 0, [])
        add2 = KeyChange(KEY_ADD, 0, 1, raw_public(K2)).sign(K1)
        assert same(sc, sv, lambda s: s.key_change(add2)).startswith("UNSUPPORTED")
        r = same(sc, sv, lambda s: s.upload(sign_image(encode_head_patch(default_head()), K1, 0)))
        assert r.startswith("AUTH_FAILED: no public key provisioned")
        assert sc.info and not int(sc.info.capabilities) & (Cap.SIGNED_IMAGES | Cap.DEVICE_KEY)
    finally:
        cb.stop()


def test_power_cut_at_every_flash_write_of_a_key_change(fw: Path, tmp_path: Path) -> None:
    """--cut-at N ends the process at the N-th flash operation of KEY_CHANGE; after the restart the board holds
    the old key set or the new one, and the change (re-sent) completes."""
    pub = tmp_path / "k1.pub.pem"
    pub.write_bytes(public_pem(K1))
    add2 = KeyChange(KEY_ADD, DEV, 1, raw_public(K2)).sign(K1)
    seen: set[int] = set()
    done = False
    for cut in range(1, 10):
        flash = tmp_path / f"cut{cut}.flash"
        b = CBoard(fw, flash, "--trust-key", str(pub))
        s = b.session()
        old = s.keys()
        s.close()
        b.stop()
        b = CBoard(fw, flash, "--cut-at", str(cut))
        s = b.session(timeout=0.5, retries=1)
        try:
            s.key_change(add2)
            done = True
        except LinkError:
            done = False
        rc = b.stop() if done else b.proc.wait(5)
        assert done or rc == 75, (cut, rc)
        b = CBoard(fw, flash)
        s = b.session()
        ks = s.keys()
        assert ks in (old, KeySet(4, 1, [*old.hashes, key_hash(raw_public(K2))])), (cut, ks)
        seen.add(ks.counter)
        assert s.key_change(add2).counter == 1
        b.stop()
        if done:
            break
    assert done and seen == {0, 1}, seen


KEYHASH1 = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"


def test_confirm_runs_the_signed_payload(boards) -> None:
    """The C board runs the payload of the signed image (not its header): golden vectors of the deployed head pass,
    and the payload is what GET_HEAD returns."""
    _, sc, sv, _ = boards
    h = default_head().with_(bias=default_head().bias + 11)
    for s in (sc, sv):
        s.deploy_head(h, FEATS[:6], security_counter=4, signing_key=K1)
        got = s.get_head()
        assert np.array_equal(head_forward_int8(got, FEATS), head_forward_int8(h, FEATS))


def test_power_cut_at_every_flash_write_of_a_signed_deploy(fw: Path, tmp_path: Path) -> None:
    """A signed deploy (upload, VERIFY, ACTIVATE, CONFIRM raising the security floor) cut at every flash operation:
    after the restart the board runs the old head with the old floor or the new head with the new floor, never a
    mix, and the deploy then completes."""
    pub = tmp_path / "k1.pub.pem"
    pub.write_bytes(public_pem(K1))
    old, new = default_head(), default_head().with_(bias=default_head().bias + 21)
    g = FEATS[:4]
    seen, done = set(), False
    for cut in range(1, 40):
        flash = tmp_path / f"cut{cut}.flash"
        b = CBoard(fw, flash, "--trust-key", str(pub))
        b.stop()
        b = CBoard(fw, flash, "--cut-at", str(cut))
        s = b.session(timeout=0.5, retries=1)
        try:
            s.deploy_head(new, g, security_counter=3, signing_key=K1)
            done = True
        except (LinkError, DeviceError):
            done = False
        rc = b.stop() if done else b.proc.wait(5)
        assert done or rc == 75, (cut, rc)
        b = CBoard(fw, flash)
        s = b.session()
        bias = s.get_head().bias.tolist()
        assert bias in (old.bias.tolist(), new.bias.tolist()), cut
        is_new = bias == new.bias.tolist()
        seen.add(is_new)
        # the floor moved with the commit: an image below it is refused exactly when the new head runs
        r = answer(lambda s: s.upload(sign_image(encode_head_patch(old), K1, 2)), s)
        assert r.startswith("DOWNGRADE") == is_new, (cut, r)
        s.deploy_head(new, g, security_counter=3, signing_key=K1)
        assert s.get_head().bias.tolist() == new.bias.tolist()
        b.stop()
        if done:
            break
    assert done and seen == {False, True}, seen


def test_signing_golden_up_to_date() -> None:
    """firmware/tests/golden/golden_signing.h is what scripts/gen_signing_golden.py writes from fedtiny.link.signing."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_signing_golden.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_signed_full_image_runs_its_payload(fw: Path, tmp_path: Path, tiny_tflite: bytes) -> None:
    """A signed .tflite (image kind 2): the C board verifies the signature, then the interpreter's checks on the
    payload in place, and runs it as its backbone; the same model signed by an untrusted key is refused."""
    from fedtiny.model.flatbuffer import read_head

    (tmp_path / "k1.pub.pem").write_bytes(public_pem(K1))
    (tmp_path / "factory.bin").write_bytes(encode_head_patch(read_head(tiny_tflite)))  # the model's C x D
    b = CBoard(
        fw,
        tmp_path / "c.flash",
        "--trust-key",
        str(tmp_path / "k1.pub.pem"),
        "--factory-head",
        str(tmp_path / "factory.bin"),
    )
    try:
        s = b.session()
        g = RNG.integers(-128, 128, (3, 64)).astype(np.int8)
        r = answer(lambda s: s.verify(s.upload(sign_image(tiny_tflite, K3, 1), ImageKind.TFLITE).slot), s)
        assert r == "AUTH_FAILED: signed image: signed by a key this board does not trust"
        st = s.deploy_model(tiny_tflite, g, security_counter=1, signing_key=K1)
        assert st.slots[st.confirmed].kind == ImageKind.TFLITE
        info = s.hello()
        assert info.capabilities & Cap.RAW_SAMPLES and info.raw_input_len == 16 * 16
    finally:
        b.stop()


IMGTOOL = shutil.which("imgtool") or str(Path(sys.executable).parent / "imgtool")


@pytest.mark.skipif(
    not Path(IMGTOOL).exists(), reason="imgtool (pip install imgtool, dev extra) not installed"
)
def test_c_board_takes_an_imgtool_signed_head(fw: Path, tmp_path: Path) -> None:
    """MCUboot's own tool signs (0x200 padded header, security counter 5): the C board verifies, runs and confirms it,
    and its floor is the signed counter."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    (tmp_path / "k1.pem").write_bytes(K1.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "k1.pub.pem").write_bytes(public_pem(K1))
    h = default_head().with_(bias=default_head().bias + 5)
    (tmp_path / "head.bin").write_bytes(encode_head_patch(h))
    cmd = [IMGTOOL, "sign", "-k", str(tmp_path / "k1.pem"), "--header-size", "0x200", "--pad-header"]
    cmd += ["--version", "2.0.0", "--security-counter", "5", "-S", "0x40000"]
    subprocess.run(
        [*cmd, str(tmp_path / "head.bin"), str(tmp_path / "head.imgtool")], check=True, capture_output=True
    )
    image = (tmp_path / "head.imgtool").read_bytes()
    b = CBoard(fw, tmp_path / "c.flash", "--trust-key", str(tmp_path / "k1.pub.pem"))
    try:
        s = b.session()
        st = s.upload(image)
        s.verify(st.slot)
        s.activate(st.slot)
        s.confirm(st.slot, FEATS[:4], head_forward_int8(h, FEATS[:4]))
        assert s.get_head().bias.tolist() == h.bias.tolist()
        r = answer(lambda s: s.upload(sign_image(encode_head_patch(default_head()), K1, 4)), s)
        assert r == "DOWNGRADE: security counter 4 < the board's 5"
    finally:
        b.stop()


def test_fuzz_signed_image_parser_and_key_change() -> None:
    """libFuzzer over ft_image (parse + verify, a reader that traps outside the image) and KEY_CHANGE, seeded with
    fedtiny-signed images (firmware/tests/fuzz/corpus_image)."""
    if shutil.which("clang") is None:
        pytest.skip("clang not installed (apt: clang libclang-rt-14-dev; `make system-deps`)")
    secs = int(os.environ.get("FEDTINY_FUZZ_SECONDS", "10"))
    r = subprocess.run(
        ["make", "-C", str(FW), "fuzz-image-run", f"FUZZ_SECONDS={secs}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Done" in r.stderr and "ERROR" not in r.stderr


def test_mutated_signed_images_refused_alike(boards) -> None:
    """300 mutations of a signed head (bytes flipped or overwritten, truncated, extended, header and TLV lengths
    rewritten): the C parser/verifier and the virtual board's give the same status and reason for every one."""
    _, sc, sv, _ = boards
    good = sign_image(encode_head_patch(default_head().with_(bias=default_head().bias + 1)), K1, 3)
    assert len(good) == 928
    # u16 fields: hdr_size, protect_tlv_size, img_size, flags; the lengths of the protected area, SEC_CNT, the TLV
    # area, SHA256, KEYHASH, ED25519 (a 740-byte payload: the protected area starts at 772)
    fields = [8, 10, 12, 16, 774, 778, 786, 790, 826, 862]
    rng = np.random.default_rng(2026)
    answers: dict[str, int] = {}
    for i in range(300):
        img = bytearray(good)
        kind = i % 5
        if kind == 0:
            img[rng.integers(len(img))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            img[rng.integers(len(img))] = int(rng.integers(256))
        elif kind == 2:
            del img[int(rng.integers(1, len(img))) :]
        elif kind == 3:
            img += bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8))
        else:
            off = fields[int(rng.integers(len(fields)))]
            struct.pack_into("<H", img, off, int(rng.integers(0, 1 << 16)))
        a = same(sc, sv, upload_verify(bytes(img), declared=3))
        answers[a] = answers.get(a, 0) + 1
    assert "OK" not in answers
    assert len(answers) >= 8, answers  # many different refusals were exercised, not one


def test_mutated_key_changes_refused_alike(boards) -> None:
    """200 mutations of a signed KeyChange get the same status and reason on both boards: refused, except changes of
    the reserved bytes 5..7, which are ignored (in the signature too) and so apply the change on both."""
    _, sc, sv, _ = boards
    good = KeyChange(KEY_ADD, DEV, 1, raw_public(K2)).sign(K1).encode()
    rng = np.random.default_rng(7)
    seen = set()
    for i in range(200):
        m, j = bytearray(good), int(rng.integers(len(good)))
        if i % 3 == 0:
            m[j] ^= 1 << int(rng.integers(8))
        elif i % 3 == 1:
            m[j] = int(rng.integers(256))
        else:
            m, j = (m[: int(rng.integers(0, len(m)))] if i % 2 else m + b"\x00"), -1
        if bytes(m) == good:
            continue
        a = same(sc, sv, lambda s, m=bytes(m): s.request(MsgType.KEY_CHANGE, m))
        assert (a == "OK") == (j in (5, 6, 7)), (i, j, a)
        seen.add(a)
    assert len(seen) >= 5, seen
    assert sc.keys() == sv.keys() == KeySet(4, 1, [bytes.fromhex(KEYHASH1), key_hash(raw_public(K2))])
