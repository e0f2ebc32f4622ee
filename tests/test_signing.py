"""Issue 10, security model: Ed25519-signed MCUboot images (imgtool interop), key rotation, anti-rollback from the
signed TLV, per-device update keys; on the virtual board, through the session, the gateway and the CLI."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.clients.board import BoardConfig, PowerCut, VirtualBoard, default_head, serve_board
from fedtiny.clients.gateway.boards import GatewayBoards, Replay
from fedtiny.errors import DeviceError, UpdateRejected
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.messages import (
    UPLOAD_SIGNED,
    Cap,
    ImageKind,
    MsgType,
    SlotState,
    TrainRequest,
    UploadBegin,
    UploadState,
)
from fedtiny.link.session import BoardSession
from fedtiny.link.signing import (
    KEY_ADD,
    KEY_RETIRE,
    KeyChange,
    SignatureError,
    device_key,
    generate_key,
    key_hash,
    load_public_key,
    parse_image,
    private_pem,
    public_pem,
    raw_public,
    sign_image,
    verify_image,
)
from fedtiny.link.transport import InProcessTransport

FLEET = bytes(range(32))
RNG = np.random.default_rng(3)
FEATS = RNG.integers(-128, 128, (40, 64)).astype(np.int8)
LABELS = RNG.integers(0, 10, 40)
A, B, C = generate_key(), generate_key(), generate_key()
IMGTOOL = shutil.which("imgtool") or str(Path(sys.executable).parent / "imgtool")


def _board(keys=(A,), path: str | None = None, model: bytes | None = None, **kw) -> VirtualBoard:
    return VirtualBoard(BoardConfig(trust_keys=tuple(raw_public(k) for k in keys), **kw), path, model=model)


def _session(b: VirtualBoard, key: bytes | None = None) -> BoardSession:
    s = BoardSession(InProcessTransport(b), key=key)
    s.hello()
    return s


def _patch(seed: int = 1) -> bytes:
    return encode_head_patch(default_head(seed=seed))


# ----- the image format -------------------------------------------------------------------------------------
def test_sign_parse_verify_roundtrip_and_refusals() -> None:
    payload = _patch()
    img = sign_image(payload, A, security_counter=7, version=(1, 2, 3, 4))
    im = verify_image(img, [raw_public(B), raw_public(A)])
    assert im.payload == payload and im.security_counter == 7 and im.version == (1, 2, 3, 4)
    assert im.keyhash == key_hash(raw_public(A))
    with pytest.raises(SignatureError, match="does not trust"):
        verify_image(img, [raw_public(B)])
    for off in (0, 40, len(img) - 70, len(img) - 1):  # header, payload, hash TLV, signature
        bad = bytearray(img)
        bad[off] ^= 1
        with pytest.raises(SignatureError):
            verify_image(bytes(bad), [raw_public(A)])
    with pytest.raises(SignatureError, match="ends at"):
        verify_image(img + b"\x00", [raw_public(A)])


def test_parser_never_raises_anything_but_signature_error() -> None:
    img = sign_image(_patch(), A, 3)
    rng = np.random.default_rng(0)
    for i in range(3000):
        b = bytearray(img[: rng.integers(0, len(img) + 1)] if i % 3 == 0 else img)
        for _ in range(rng.integers(1, 4)):
            if b:
                b[rng.integers(0, len(b))] = rng.integers(0, 256)
        try:
            verify_image(bytes(b), [raw_public(A)])
        except SignatureError:
            pass


@pytest.mark.skipif(
    not Path(IMGTOOL).exists(), reason="imgtool (pip install imgtool, dev extra) not installed"
)
def test_imgtool_verifies_what_fedtiny_sign_writes_and_fedtiny_verifies_imgtool(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["key", "generate", "--out", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    (tmp_path / "head.bin").write_bytes(_patch())
    res = CliRunner().invoke(
        cli,
        [
            "sign",
            str(tmp_path / "head.bin"),
            "--key",
            str(tmp_path / "k/signing.pem"),
            "--out",
            str(tmp_path / "head.signed"),
            "--security-counter",
            "9",
            "--version",
            "1.2.3+4",
        ],
    )
    assert res.exit_code == 0, res.output
    for k in ("signing.pem", "signing.pub.pem"):
        out = subprocess.run(
            [IMGTOOL, "verify", "-k", str(tmp_path / "k" / k), str(tmp_path / "head.signed")],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and "correctly validated" in out.stdout and "1.2.3+4" in out.stdout, out
    bad = bytearray((tmp_path / "head.signed").read_bytes())
    bad[50] ^= 1
    (tmp_path / "bad.signed").write_bytes(bytes(bad))
    out = subprocess.run(
        [IMGTOOL, "verify", "-k", str(tmp_path / "k/signing.pem"), str(tmp_path / "bad.signed")],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    # the other way: imgtool signs (padded 0x200 header), the virtual board takes it
    subprocess.run(
        [
            IMGTOOL,
            "sign",
            "-k",
            str(tmp_path / "k/signing.pem"),
            "--header-size",
            "0x200",
            "--pad-header",
            "--version",
            "2.0.0",
            "--security-counter",
            "5",
            "-S",
            "0x40000",
            str(tmp_path / "head.bin"),
            str(tmp_path / "head.imgtool"),
        ],
        check=True,
        capture_output=True,
    )
    signed = (tmp_path / "head.imgtool").read_bytes()
    assert parse_image(signed).security_counter == 5 and parse_image(signed).header_size == 0x200
    b = VirtualBoard(BoardConfig(trust_keys=(load_public_key(tmp_path / "k/signing.pub.pem"),)))
    s = _session(b)
    st = s.upload(signed, ImageKind.HEAD_PATCH)
    s.verify(st.slot)
    s.activate(st.slot)
    s.confirm(st.slot, FEATS[:4], _expected(1, FEATS[:4]))
    assert b.meta.sec_floor == 5 and b.head.equals(default_head(seed=1))


def _expected(seed: int, x: np.ndarray) -> np.ndarray:
    from fedtiny.ondevice import head_forward_int8

    return head_forward_int8(default_head(seed=seed), x)


# ----- the virtual board --------------------------------------------------------------------------------------
def test_board_with_public_keys_takes_signed_heads_and_refuses_hmac_unknown_keys_and_downgrades(
    tmp_path,
) -> None:
    f = str(tmp_path / "b.flash")
    b = _board((A,), f, fleet_key=FLEET)
    s = _session(b, FLEET)
    assert s.info is not None and s.info.capabilities & Cap.SIGNED_IMAGES
    with pytest.raises(DeviceError, match="AUTH_FAILED: this board accepts only Ed25519-signed"):
        s.deploy_head(default_head(seed=1), FEATS[:4])  # HMAC-only, with the right fleet key
    st = s.deploy_head(default_head(seed=2), FEATS[:4], signing_key=A, security_counter=5)
    assert st.slots[st.confirmed].state == SlotState.CONFIRMED and b.meta.sec_floor == 5
    assert s.get_head().equals(default_head(seed=2))
    # signed by a key the board does not trust: refused at VERIFY, the slot marked bad
    up = s.upload(sign_image(_patch(3), B, 6))
    with pytest.raises(
        DeviceError, match="AUTH_FAILED: signed image: signed by a key this board does not trust"
    ):
        s.verify(up.slot)
    assert b.meta.slots[up.slot].state == SlotState.RECEIVING and b.meta.slots[up.slot].received == 0
    # the security counter comes from the signed TLV: a BEGIN declaring more than was signed fails VERIFY
    s2 = _session(_board((A,)))
    img = sign_image(_patch(3), A, 4)
    u = UploadBegin.for_image(img, ImageKind.HEAD_PATCH, None)
    assert u.flags & UPLOAD_SIGNED and u.security_counter == 4 and u.tag == bytes(32)
    u.security_counter = 9
    st2 = UploadState.decode(s2.request(MsgType.UPLOAD_BEGIN, u.encode()))
    for off in range(0, len(img), 1000):
        s2.request(MsgType.UPLOAD_CHUNK, struct.pack("<I", off) + img[off : off + 1000])
    with pytest.raises(
        DeviceError, match="AUTH_FAILED: declared security counter 9 differs from the signed 4"
    ):
        s2.verify(st2.slot)
    # an older signed image (counter 4 < 5) is a downgrade; the board's keys survive a power cycle
    with pytest.raises(DeviceError, match="DOWNGRADE"):
        s.deploy_head(default_head(seed=3), FEATS[:4], signing_key=A, security_counter=4)
    again = VirtualBoard(BoardConfig(), f)  # no --trust-key: the flash keeps the board's keys
    assert again.meta.keys == [raw_public(A)] and again.capabilities & Cap.SIGNED_IMAGES
    assert again.head.equals(default_head(seed=2))


def test_board_without_public_keys_refuses_signed_images_and_keeps_hmac() -> None:
    b = VirtualBoard(BoardConfig(fleet_key=FLEET))
    s = _session(b, FLEET)
    assert s.info is not None and not s.info.capabilities & Cap.SIGNED_IMAGES
    with pytest.raises(DeviceError, match="AUTH_FAILED: no public key provisioned"):
        s.deploy_head(default_head(seed=2), FEATS[:4], signing_key=A)
    s.deploy_head(default_head(seed=2), FEATS[:4], security_counter=1)  # the fleet-key path is unchanged
    assert b.meta.sec_floor == 1


def test_signed_full_model(tiny_tflite: bytes) -> None:
    from fedtiny.model.flatbuffer import read_head

    b = _board((A,), model=tiny_tflite)
    s = _session(b)
    head = read_head(tiny_tflite)
    st = s.deploy_model(tiny_tflite, FEATS[:3, : head.num_features], signing_key=A, security_counter=2)
    assert st.slots[st.confirmed].kind == ImageKind.TFLITE and b.meta.sec_floor == 2
    assert b.backbone == tiny_tflite  # the payload runs, not the MCUboot container


def test_corrupt_signed_slot_in_flash_falls_back(tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    b = _board((A,), f)
    s = _session(b)
    st = s.deploy_head(default_head(seed=2), FEATS[:4], signing_key=A, security_counter=1)
    slot = st.confirmed
    b.flash.write(b.flash.slot_base(slot) + 40, b"\x00")  # bit rot inside the payload
    again = VirtualBoard(BoardConfig(), f)
    assert again.meta.confirmed != slot and again.meta.reverted & 0x02  # FELL_BACK


# ----- key rotation -----------------------------------------------------------------------------------------
def test_key_rotation_add_retire_replay_limits_and_wrong_device(tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    b = _board((A,), f, device_id=7)
    s = _session(b)
    ks = s.keys()
    assert ks.counter == 0 and ks.hashes == [key_hash(raw_public(A))] and ks.max_keys == 4
    add_b = KeyChange(KEY_ADD, 7, 1, raw_public(B)).sign(A)
    assert s.key_change(add_b).hashes == [key_hash(raw_public(A)), key_hash(raw_public(B))]
    assert s.key_change(add_b).counter == 1  # the same change again: already applied, OK (retry after reset)
    s.deploy_head(default_head(seed=2), FEATS[:4], signing_key=B, security_counter=1)  # B now signs images
    s.key_change(KeyChange(KEY_RETIRE, 0, 2, raw_public(A)).sign(B))  # device id 0: any board
    with pytest.raises(DeviceError, match="does not trust"):
        s.deploy_head(default_head(seed=3), FEATS[:4], signing_key=A, security_counter=2)
    with pytest.raises(
        DeviceError, match="AUTH_FAILED: key change signed by a key this board does not trust"
    ):
        s.key_change(KeyChange(KEY_ADD, 7, 3, raw_public(A)).sign(A))  # a retired key signs nothing
    with pytest.raises(DeviceError, match="DOWNGRADE"):
        s.key_change(KeyChange(KEY_ADD, 7, 1, raw_public(A)).sign(B))  # an old counter: a replay
    with pytest.raises(DeviceError, match="AUTH_FAILED: key change for device 8"):
        s.key_change(KeyChange(KEY_ADD, 8, 5, raw_public(A)).sign(B))
    with pytest.raises(DeviceError, match="BAD_STATE: cannot retire the last"):
        s.key_change(KeyChange(KEY_RETIRE, 7, 5, raw_public(B)).sign(B))
    extra = [generate_key() for _ in range(3)]
    for i, k in enumerate(extra):
        s.key_change(KeyChange(KEY_ADD, 7, 10 + i, raw_public(k)).sign(B))
    with pytest.raises(DeviceError, match="NO_SPACE"):
        s.key_change(KeyChange(KEY_ADD, 7, 20, raw_public(C)).sign(B))
    forged = KeyChange(KEY_ADD, 7, 21, raw_public(C)).sign(B)
    forged.public_key = raw_public(A)  # signature no longer covers the body
    with pytest.raises(DeviceError, match="bad Ed25519 signature"):
        s.key_change(forged)
    with pytest.raises(DeviceError, match="MALFORMED"):
        s.request(0x28, forged.encode()[:-1])
    again = VirtualBoard(BoardConfig(trust_keys=(raw_public(C),)), f)  # flash wins over re-provisioning
    assert (
        again.meta.key_counter == 12
        and raw_public(B) in again.meta.keys
        and raw_public(C) not in again.meta.keys
    )


def test_key_change_is_atomic_against_power_cuts(tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    _board((A,), f)
    for cut in (1, 2):
        b = VirtualBoard(BoardConfig(), f, cut_at_write=None)
        b.flash.cut_at_write = b.flash.writes + cut
        s = BoardSession(InProcessTransport(b), retries=1, timeout=0.05)
        try:
            s.key_change(KeyChange(KEY_ADD, 0, 1, raw_public(B)).sign(A))
        except (PowerCut, Exception):
            pass
        after = VirtualBoard(BoardConfig(), f)
        assert after.meta.keys in ([raw_public(A)], [raw_public(A), raw_public(B)])
        assert (after.meta.key_counter == 1) == (len(after.meta.keys) == 2)


def test_keys_on_a_board_without_public_keys() -> None:
    s = _session(VirtualBoard(BoardConfig(fleet_key=FLEET)))
    assert s.keys().hashes == []
    with pytest.raises(DeviceError, match="UNSUPPORTED"):
        s.key_change(KeyChange(KEY_ADD, 0, 1, raw_public(B)).sign(A))


# ----- per-device update keys ---------------------------------------------------------------------------------
MASTER = bytes(range(100, 132))


def test_device_key_derivation() -> None:
    k1, k2 = device_key(MASTER, 1), device_key(MASTER, 2)
    assert len(k1) == 32 and k1 != k2 and device_key(MASTER, 1) == k1
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ref = HKDF(hashes.SHA256(), 32, b"fedtiny-update-key-v1", b"FTDK" + struct.pack("<I", 1)).derive(MASTER)
    assert k1 == ref  # the documented derivation
    assert k1.hex() == DOC_DEVICE_KEY_1


DOC_DEVICE_KEY_1 = device_key(MASTER, 1).hex()


def _port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


def _serve(tmp_path: Path, stop: threading.Event, dev: int, cfg: BoardConfig) -> str:
    uri = f"socket://127.0.0.1:{_port()}"
    threading.Thread(
        target=serve_board,
        args=(uri, str(tmp_path / f"b{dev}.flash"), dev, FLEET),
        daemon=True,
        kwargs=dict(head=default_head(4, 16, seed=5), cfg=cfg, stop=stop, ready=lambda _a: None),
    ).start()
    time.sleep(0.3)
    return uri


def test_gateway_signs_heads_and_checks_per_device_update_keys(tmp_path: Path) -> None:
    head = default_head(4, 16, seed=5)
    new = default_head(4, 16, seed=6)
    rng = np.random.default_rng(0)
    root = tmp_path / "replay"
    root.mkdir()
    for dev in (1, 2, 3, 4):
        x, y = rng.integers(-128, 128, (20, 16)).astype(np.int8), rng.integers(0, 4, 20)
        np.savez(
            root / f"device_{dev}.npz",
            segments=np.array(1),
            train_feats_0=x,
            train_labels_0=y,
            test_feats_0=x,
            test_labels_0=y,
        )
    stop = threading.Event()
    try:
        pub = (raw_public(A),)
        good = _serve(tmp_path, stop, 1, BoardConfig(trust_keys=pub, device_key=device_key(MASTER, 1)))
        other = _serve(
            tmp_path, stop, 2, BoardConfig(trust_keys=pub, device_key=device_key(MASTER, 3))
        )  # wrong
        nokey = _serve(tmp_path, stop, 3, BoardConfig(trust_keys=pub))  # fleet-key tags only
        hmac_board = _serve(
            tmp_path, stop, 4, BoardConfig(device_key=device_key(MASTER, 4))
        )  # no public keys
        gw = GatewayBoards(
            [good, other, nokey, hmac_board], FLEET, Replay(root), signing_key=A, update_master=MASTER
        )
        out = gw.train(
            new,
            rng.integers(-128, 128, (4, 16)).astype(np.int8),
            TrainRequest(1, 4, 0.05, 0, 0, 0, 1, 1),
            0,
            {},
        )
        by = {o.device_id: o for o in out}
        assert not by[1].error and by[1].update["device_id"] == 1
        assert "bad HMAC tag (under the per-device key)" in by[2].error and "\n" not in by[2].error
        assert "has no per-device update key (capability DEVICE_KEY)" in by[3].error
        assert "AUTH_FAILED: no public key provisioned" in by[4].error
        assert not by[1].update or by[1].update["round"] == 1
        del head
    finally:
        stop.set()


def test_spoofed_device_id_is_rejected() -> None:
    b = VirtualBoard(BoardConfig(device_id=5, device_key=device_key(MASTER, 5)))
    s = _session(b)
    s.push_samples(FEATS, LABELS, clear=True)
    s.train(TrainRequest(1, 8, 0.05, 0, 0, 0, 1, 1))
    uid, blob = b.pending  # type: ignore[misc]
    from fedtiny.link.blobs import UpdateBlob

    upd = UpdateBlob.decode(blob)
    upd.device_id = 6  # another board's id, tagged with that board's key: the link is device 5
    b.pending = (uid, upd.sign(device_key(MASTER, 6)).encode())
    with pytest.raises(UpdateRejected, match="update claims device 6, link is device 5"):
        s.read_update(device_key(MASTER, 5))


# ----- CLI ----------------------------------------------------------------------------------------------------
def test_cli_keys_device_and_errors(tmp_path: Path) -> None:
    r = CliRunner()
    assert r.invoke(cli, ["key", "generate", "--out", str(tmp_path)]).exit_code == 0
    again = r.invoke(cli, ["key", "generate", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    res = r.invoke(
        cli,
        [
            "key",
            "device",
            "--master",
            str(tmp_path / "update-master.key"),
            "--device-id",
            "3",
            "--out",
            str(tmp_path / "d3.key"),
        ],
    )
    assert res.exit_code == 0, res.output
    master = bytes.fromhex((tmp_path / "update-master.key").read_text())
    assert bytes.fromhex((tmp_path / "d3.key").read_text()) == device_key(master, 3)
    (tmp_path / "x.bin").write_bytes(b"abc")
    res = r.invoke(
        cli,
        [
            "sign",
            str(tmp_path / "x.bin"),
            "--key",
            str(tmp_path / "update-master.key"),
            "--out",
            str(tmp_path / "x.s"),
        ],
    )
    assert res.exit_code == 2 and "not an unencrypted PEM private key" in res.output
    res = r.invoke(
        cli,
        [
            "sign",
            str(tmp_path / "x.bin"),
            "--key",
            str(tmp_path / "signing.pem"),
            "--out",
            str(tmp_path / "x.s"),
            "--version",
            "1.x",
        ],
    )
    assert res.exit_code == 2 and "MAJOR.MINOR.REVISION+BUILD" in res.output


def test_cli_keys_change_over_a_socket(tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(private_pem(A))
    (tmp_path / "b.pub").write_bytes(public_pem(B))
    stop = threading.Event()
    try:
        uri = _serve(tmp_path, stop, 9, BoardConfig(trust_keys=(raw_public(A),)))
        res = CliRunner().invoke(
            cli,
            [
                "key",
                "change",
                uri,
                "--signing-key",
                str(tmp_path / "a.pem"),
                "--add",
                str(tmp_path / "b.pub"),
            ],
        )
        assert res.exit_code == 0, res.output
        assert "key counter 1, trusts 2 key(s)" in res.output
    finally:
        stop.set()


# ----- the document -------------------------------------------------------------------------------------------
def test_protocol_doc_signing_vectors() -> None:
    """docs/protocol.md section 7 lists a signed image, a key change and a device key made from fixed keys."""
    from fedtiny.link.signing import signing_vectors

    doc = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    for name, value in signing_vectors().items():
        assert f"`{value}`" in doc, name


# ----- C: core/ft_ed25519.c (Monocypher's check equation + SHA-512) against `cryptography` ----------------------
FIRMWARE = Path(__file__).parents[1] / "firmware"
L_ORDER = 2**252 + 27742317777372353535851937790883648493


def _ed_records(n_sig: int, n_sha: int, seed: int) -> tuple[bytes, int]:
    """Vector records (format in firmware/tests/ed25519_check.c); validity decided by `cryptography`."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    rng = np.random.default_rng(seed)
    out = bytearray()
    valid = 0
    for _ in range(n_sha):
        m = rng.bytes(int(rng.integers(0, 300)))
        out += b"\x00" + struct.pack("<I", len(m)) + m + hashlib.sha512(m).digest()
    for i in range(n_sig):
        k = generate_key()
        m = rng.bytes(int(rng.integers(0, 200)))
        pub, sig = raw_public(k), bytearray(k.sign(m))
        how = (
            i % 6
        )  # 0, 1: valid; 2: bit in R; 3: bit in S; 4: message; 5: S + L (non-canonical) or public key
        if how == 2:
            sig[int(rng.integers(0, 32))] ^= 1 << int(rng.integers(0, 8))
        elif how == 3:
            sig[32 + int(rng.integers(0, 32))] ^= 1 << int(rng.integers(0, 8))
        elif how == 4:
            m = (m + b"x") if not m else bytes([m[0] ^ 1]) + m[1:]
        elif how == 5 and i % 12 == 5:
            s = int.from_bytes(sig[32:], "little") + L_ORDER
            if s < 2**256:
                sig[32:] = s.to_bytes(32, "little")
        elif how == 5:
            pb = bytearray(pub)
            pb[int(rng.integers(0, 32))] ^= 1 << int(rng.integers(0, 8))
            pub = bytes(pb)
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(bytes(sig), m)
            ok = 1
        except Exception:  # invalid point or signature: refused
            ok = 0
        valid += ok
        out += bytes([1, ok]) + pub + bytes(sig) + struct.pack("<I", len(m)) + m
    return bytes(out), valid


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", *args, f"PIP={sys.executable} -m pip"],
        cwd=FIRMWARE,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler"
)
def test_c_ed25519_against_cryptography_host_and_qemu(tmp_path: Path) -> None:
    """RFC 8032 vectors, 500 SHA-512 and 3000 signatures (valid, corrupted R/S/message/key, S + L) on the host
    (ASan+UBSan); in QEMU (Cortex-M4F) a subset, with the instructions per verification and the code size."""
    if _make("third-party").returncode != 0:
        pytest.skip("monocypher could not be fetched from PyPI (pip download pymonocypher)")
    recs, valid = _ed_records(3000, 500, 1)
    assert 900 < valid < 1100
    (tmp_path / "vectors.bin").write_bytes(recs)
    small, _ = _ed_records(24, 8, 2)
    (tmp_path / "ed25519_vectors.h").write_text(
        "static const unsigned char ft_ed_vectors[] = {" + ",".join(str(b) for b in small) + "};\n"
    )
    r = _make("test-ed25519-host", f"ED_VECTORS={tmp_path / 'vectors.bin'}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "500 sha512" in r.stdout and "0 failure(s)" in r.stdout
    r = _make("test-ed25519-mps2", f"ED_VECTORS_H={tmp_path}")
    if "SKIP" in r.stdout:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failure(s)" in r.stdout
    bench = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH ed25519_verify_instructions")]
    assert bench and 100_000 < int(bench[0].split()[-1]) < 20_000_000
    print(bench[0])
    # code size of the verifier as linked (gc-sections): ft_ed25519.o + the Monocypher functions it pulls in
    m = (FIRMWARE / "build" / "mps2" / "ed25519_check.elf.map").read_text()
    m = m[m.index("Linker script and memory map") :]  # not the sections --gc-sections discarded
    size = 0
    for _sec, hexsize, obj in re.findall(
        r"^ \.(text|rodata)\S*\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$", m, re.M
    ):
        if obj.endswith(("monocypher_arm.o", "ft_ed25519.o")) or "ft_ed25519" in obj:
            size += int(hexsize, 16)
    print(f"ed25519 verify code+rodata: {size} bytes")
    assert 4_000 < size < 20_000
