"""Signed images and keys of docs/protocol.md section 7.

* **Images** are signed on the host with Ed25519 in MCUboot's image format, as `imgtool sign` writes them:
  a 32-byte header, the payload (a HeadPatch or a .tflite), a protected TLV area with the security counter
  (TLV 0x50) and a TLV area with the SHA-256 of header+payload+protected TLVs (0x10), the key hash (0x01:
  SHA-256 of the public key's DER SubjectPublicKeyInfo, as imgtool) and the Ed25519 signature of that SHA-256
  digest (0x24, imgtool's default, not `--pure`). `imgtool verify -k key.pem` accepts what `sign_image` writes.
* **Key changes** (KEY_CHANGE): a 144-byte message signed (pure Ed25519 over its first 80 bytes) by a key the
  board trusts, adding or retiring one public key; a key counter makes an old message fail on replay.
* **Per-device update keys**: HKDF-SHA256 of a fleet master secret and the device id; each board holds only
  its own and tags its UpdateBlobs with it; a gateway with the master derives the key of the board it talks to.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedtiny.errors import FedTinyError

IMAGE_MAGIC = 0x96F3B83D
IMAGE_HEADER_SIZE = 32
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_KEYHASH = 0x01
TLV_SHA256 = 0x10
TLV_ED25519 = 0x24
TLV_SIG_PURE = 0x25
TLV_SEC_CNT = 0x50
MAX_HEADER_SIZE = 4096
MAX_TRUSTED_KEYS = 4

_HDR = struct.Struct(
    "<IIHHIIBBHII"
)  # magic, load_addr, hdr_size, protect_tlv_size, img_size, flags, version, pad
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo of an Ed25519 key

KEY_CHANGE_MAGIC = b"FTKC"
KEY_ADD, KEY_RETIRE = 1, 2
KEY_CHANGE_SIGNED = 80  # bytes covered by the signature
KEY_CHANGE_SIZE = KEY_CHANGE_SIGNED + 64

DEVICE_KEY_SALT = b"fedtiny-update-key-v1"


class SignatureError(FedTinyError):
    """A signed image or key change is malformed, signed by an unknown key or its signature is wrong."""


# ----- keys -------------------------------------------------------------------------------------------------
def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the format `imgtool keygen -t ed25519` writes and `imgtool verify -k` reads."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32-byte Ed25519 public key (what a board stores)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(public_key: bytes) -> bytes:
    """MCUboot's KEYHASH of a raw 32-byte Ed25519 public key: SHA-256 of its DER SubjectPublicKeyInfo."""
    if len(public_key) != 32:
        raise SignatureError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return hashlib.sha256(_SPKI_PREFIX + public_key).digest()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    if not p.is_file():
        raise FedTinyError(f"{p}: signing key file not found")
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise FedTinyError(f"{p}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FedTinyError(f"{p}: not an Ed25519 key (fedtiny signs with Ed25519)")
    return key


def load_public_key(path: str | Path) -> bytes:
    """A raw 32-byte Ed25519 public key from a PEM public key, a PEM private key or 64 hex digits."""
    p = Path(path)
    if not p.is_file():
        raise FedTinyError(f"{p}: public key file not found")
    data = p.read_bytes()
    text = data.decode(errors="replace").strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            if isinstance(priv, Ed25519PrivateKey):
                return raw_public(priv)
            raise FedTinyError(f"{p}: not an Ed25519 key")
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise FedTinyError(f"{p}: not a PEM Ed25519 public key or 64 hex digits ({e})") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise FedTinyError(f"{p}: not an Ed25519 public key")
    return raw_public(pub)


def write_keys(out: str | Path) -> dict[str, Path]:
    """`fedtiny key generate`: signing.pem (private, keep it on the signing host), signing.pub.pem (boards),
    update-master.key (hex, the fleet master secret of the per-device update keys; gateways)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"private": d / "signing.pem", "public": d / "signing.pub.pem", "master": d / "update-master.key"}
    for p in paths.values():
        if p.exists():
            raise FedTinyError(f"{p} exists: refusing to overwrite a key")
    key = generate_key()
    import os

    paths["private"].write_bytes(private_pem(key))
    paths["private"].chmod(0o600)
    paths["public"].write_bytes(public_pem(key))
    paths["master"].write_text(os.urandom(32).hex() + "\n")
    paths["master"].chmod(0o600)
    return paths


# ----- per-device update keys -----------------------------------------------------------------------------
def device_key(master: bytes, device_id: int) -> bytes:
    """The 32-byte update key of one board: HKDF-SHA256(ikm = master, salt = "fedtiny-update-key-v1",
    info = "FTDK" || u32 device_id)."""
    if len(master) < 16:
        raise FedTinyError(f"update master secret of {len(master)} bytes: at least 16")
    hk = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=DEVICE_KEY_SALT,
        info=b"FTDK" + struct.pack("<I", device_id & 0xFFFFFFFF),
    )
    return hk.derive(master)


def read_hex_key(path: str | Path, what: str, exact: int | None = None, minimum: int = 16) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FedTinyError(f"{p}: {what} file not found")
    try:
        key = bytes.fromhex(p.read_text().strip())
    except ValueError:
        raise FedTinyError(f"{p}: expected the {what} as hex") from None
    if exact is not None and len(key) != exact:
        raise FedTinyError(f"{p}: the {what} is exactly {exact} bytes, got {len(key)}")
    if len(key) < minimum:
        raise FedTinyError(f"{p}: the {what} must be at least {minimum} bytes")
    return key


# ----- signed images (MCUboot format) ----------------------------------------------------------------------
def parse_version(v: str) -> tuple[int, int, int, int]:
    """`major.minor.revision+build` as imgtool (missing parts are 0)."""
    try:
        main, _, build = v.partition("+")
        parts = [int(x) for x in main.split(".")] if main else []
        if len(parts) > 3:
            raise ValueError
        major, minor, rev = (parts + [0, 0, 0])[:3]
        b = int(build) if build else 0
        if not (0 <= major < 256 and 0 <= minor < 256 and 0 <= rev < 65536 and 0 <= b < 2**32):
            raise ValueError
    except ValueError:
        raise FedTinyError(f"version {v!r}: expected MAJOR.MINOR.REVISION+BUILD (e.g. 1.2.3+4)") from None
    return major, minor, rev, b


def _tlv(t: int, data: bytes) -> bytes:
    return struct.pack("<HH", t, len(data)) + data


def sign_image(
    payload: bytes,
    key: Ed25519PrivateKey,
    security_counter: int = 0,
    version: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> bytes:
    """The MCUboot image of `payload` (header 32 bytes, protected security counter, SHA-256, KEYHASH, Ed25519)."""
    if not 0 <= security_counter < 2**32:
        raise FedTinyError(f"security counter {security_counter}: a u32")
    prot = _tlv(TLV_SEC_CNT, struct.pack("<I", security_counter))
    prot = struct.pack("<HH", TLV_PROT_INFO_MAGIC, 4 + len(prot)) + prot
    hdr = _HDR.pack(IMAGE_MAGIC, 0, IMAGE_HEADER_SIZE, len(prot), len(payload), 0, *version, 0)
    signed = hdr + payload + prot
    digest = hashlib.sha256(signed).digest()
    tlvs = (
        _tlv(TLV_SHA256, digest)
        + _tlv(TLV_KEYHASH, key_hash(raw_public(key)))
        + _tlv(TLV_ED25519, key.sign(digest))
    )
    return signed + struct.pack("<HH", TLV_INFO_MAGIC, 4 + len(tlvs)) + tlvs


def is_signed_image(image: bytes) -> bool:
    return len(image) >= 4 and struct.unpack_from("<I", image)[0] == IMAGE_MAGIC


@dataclass
class SignedImage:
    """A parsed MCUboot image (structure checked, signature not yet)."""

    header_size: int
    img_size: int
    version: tuple[int, int, int, int]
    security_counter: int  # 0 without a security-counter TLV
    payload: bytes
    hashed: bytes  # header + payload + protected TLV area: what the SHA-256 TLV covers
    sha256: bytes
    keyhash: bytes
    signature: bytes


def _walk(image: bytes, off: int, end: int, what: str) -> list[tuple[int, bytes]]:
    out = []
    while off < end:
        if off + 4 > end:
            raise SignatureError(f"signed image: truncated TLV in the {what} area")
        t, n = struct.unpack_from("<HH", image, off)
        if off + 4 + n > end:
            raise SignatureError(f"signed image: TLV 0x{t:02x} runs past the {what} area")
        out.append((t, bytes(image[off + 4 : off + 4 + n])))
        off += 4 + n
    return out


def parse_image(image: bytes) -> SignedImage:
    """Parse the MCUboot layout strictly (docs/protocol.md section 7); SignatureError names what is wrong."""
    n = len(image)
    if n < IMAGE_HEADER_SIZE:
        raise SignatureError(f"signed image of {n} bytes is shorter than its 32-byte header")
    magic, _load, hdr_size, prot_size, img_size, flags, major, minor, rev, build, _pad = _HDR.unpack_from(
        image
    )
    if magic != IMAGE_MAGIC:
        raise SignatureError("signed image: bad magic (not an MCUboot image)")
    if not IMAGE_HEADER_SIZE <= hdr_size <= MAX_HEADER_SIZE:
        raise SignatureError(f"signed image: header size {hdr_size} outside 32..{MAX_HEADER_SIZE}")
    if flags != 0:
        raise SignatureError(
            f"signed image: header flags 0x{flags:x} (encrypted/compressed images are refused)"
        )
    off = hdr_size + img_size
    if off + 4 > n:
        raise SignatureError("signed image: payload runs past the image")
    counter = 0
    if prot_size:
        pm, plen = struct.unpack_from("<HH", image, off)
        if pm != TLV_PROT_INFO_MAGIC or plen != prot_size or plen < 4 or off + plen + 4 > n:
            raise SignatureError("signed image: protected TLV area does not match the header")
        seen = set()
        for t, v in _walk(image, off + 4, off + plen, "protected"):
            if t == TLV_SEC_CNT:
                if len(v) != 4 or t in seen:
                    raise SignatureError("signed image: security counter TLV must be one u32")
                counter = struct.unpack("<I", v)[0]
            seen.add(t)
        off += plen
    hashed = bytes(image[:off])
    tm, tlen = struct.unpack_from("<HH", image, off)
    if tm != TLV_INFO_MAGIC:
        raise SignatureError("signed image: no TLV area after the payload")
    if off + tlen != n:
        raise SignatureError(f"signed image: the TLV area ends at {off + tlen}, the image at {n}")
    found: dict[int, bytes] = {}
    for t, v in _walk(image, off + 4, off + tlen, "TLV"):
        if t == TLV_SIG_PURE:
            raise SignatureError("signed image: pure signatures (imgtool --pure) are not supported")
        if t in (TLV_SHA256, TLV_KEYHASH, TLV_ED25519):
            if t in found:
                raise SignatureError(f"signed image: TLV 0x{t:02x} twice")
            found[t] = v
    for t, size, name in (
        (TLV_SHA256, 32, "SHA256"),
        (TLV_KEYHASH, 32, "KEYHASH"),
        (TLV_ED25519, 64, "ED25519"),
    ):
        if len(found.get(t, b"")) != size:
            raise SignatureError(f"signed image: needs one {name} TLV (0x{t:02x}) of {size} bytes")
    return SignedImage(
        hdr_size,
        img_size,
        (major, minor, rev, build),
        counter,
        bytes(image[hdr_size : hdr_size + img_size]),
        hashed,
        found[TLV_SHA256],
        found[TLV_KEYHASH],
        found[TLV_ED25519],
    )


def verify_image(image: bytes, trusted: list[bytes]) -> SignedImage:
    """Parse and verify: SHA-256 TLV, key hash among the `trusted` raw public keys, Ed25519 over the digest."""
    im = parse_image(image)
    if hashlib.sha256(im.hashed).digest() != im.sha256:
        raise SignatureError("signed image: SHA-256 TLV does not match the image")
    pub = next((k for k in trusted if key_hash(k) == im.keyhash), None)
    if pub is None:
        raise SignatureError("signed image: signed by a key this board does not trust")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(im.signature, im.sha256)
    except InvalidSignature:
        raise SignatureError("signed image: bad Ed25519 signature") from None
    return im


# ----- key changes ------------------------------------------------------------------------------------------
@dataclass
class KeyChange:
    """KEY_CHANGE request (docs/protocol.md section 7): add or retire one trusted public key."""

    op: int  # KEY_ADD or KEY_RETIRE
    device_id: int  # 0: any board
    counter: int  # must exceed the board's key counter
    public_key: bytes  # raw 32 bytes: the key added or retired
    signer_hash: bytes = bytes(32)
    signature: bytes = bytes(64)

    def body(self) -> bytes:
        return (
            KEY_CHANGE_MAGIC
            + struct.pack("<BBHII", self.op, 0, 0, self.device_id, self.counter)
            + self.public_key
            + self.signer_hash
        )

    def sign(self, key: Ed25519PrivateKey) -> KeyChange:
        self.signer_hash = key_hash(raw_public(key))
        self.signature = key.sign(self.body())
        return self

    def encode(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def decode(cls, p: bytes) -> KeyChange:
        if len(p) != KEY_CHANGE_SIZE or p[:4] != KEY_CHANGE_MAGIC:
            raise SignatureError(f"KeyChange is {KEY_CHANGE_SIZE} bytes starting with 'FTKC'")
        op, _, _, dev, counter = struct.unpack_from("<BBHII", p, 4)
        if op not in (KEY_ADD, KEY_RETIRE):
            raise SignatureError(f"KeyChange: op {op} (1 = add, 2 = retire)")
        return cls(op, dev, counter, bytes(p[16:48]), bytes(p[48:80]), bytes(p[80:144]))

    def verify(self, trusted: list[bytes]) -> None:
        """SignatureError unless signed by one of the `trusted` keys."""
        pub = next((k for k in trusted if key_hash(k) == self.signer_hash), None)
        if pub is None:
            raise SignatureError("key change signed by a key this board does not trust")
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(self.signature, self.body())
        except InvalidSignature:
            raise SignatureError("key change: bad Ed25519 signature") from None


@dataclass
class KeySet:
    """KEYS response: the board's key counter and the key hashes of its trusted keys."""

    max_keys: int
    counter: int
    hashes: list[bytes]

    def encode(self) -> bytes:
        return struct.pack("<BBHI", len(self.hashes), self.max_keys, 0, self.counter) + b"".join(self.hashes)

    @classmethod
    def decode(cls, p: bytes) -> KeySet:
        from fedtiny.errors import ProtocolError

        if len(p) < 8 or len(p) != 8 + 32 * p[0]:
            raise ProtocolError(f"KeySet: payload of {len(p)} bytes")
        n, mx, _, counter = struct.unpack_from("<BBHI", p)
        return cls(mx, counter, [bytes(p[8 + 32 * i : 40 + 32 * i]) for i in range(n)])


# ----- docs/protocol.md section 7 vectors ---------------------------------------------------------------------
def vector_keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """The two keys of the vectors: Ed25519 seeds bytes(range(32)) and bytes(range(32, 64))."""
    return (
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
        Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))),
    )


def signing_vectors() -> dict[str, str]:
    """Hex of: key 1's public key and key hash, the signed image of payload bytes(range(16)) (counter 3, version
    1.2.3+4), the KeyChange adding key 2 on device 7 with counter 1 signed by key 1, and the update key of
    device 7 under the master bytes(range(32))."""
    k1, k2 = vector_keys()
    return {
        "public key 1": raw_public(k1).hex(),
        "key hash 1": key_hash(raw_public(k1)).hex(),
        "signed image": sign_image(bytes(range(16)), k1, 3, (1, 2, 3, 4)).hex(),
        "key change": KeyChange(KEY_ADD, 7, 1, raw_public(k2)).sign(k1).encode().hex(),
        "device key 7": device_key(bytes(range(32)), 7).hex(),
    }
