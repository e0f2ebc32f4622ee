#!/usr/bin/env python3
"""Generate firmware/tests/golden/golden_signing.h: signed MCUboot images and KEY_CHANGE messages made by
`fedtiny.link.signing` (the virtual board's code, the source of truth) for the C image parser and key set
(firmware/core/ft_image.c, ft_keys.c; tests in firmware/tests/test_image.c, test_keys.c).

    .venv/bin/python scripts/gen_signing_golden.py            # regenerate the header
    .venv/bin/python scripts/gen_signing_golden.py --check    # exit 1 if the checked-in header is stale

Ed25519 signatures are deterministic (RFC 8032), so the header is reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "firmware" / "tests" / "golden" / "golden_signing.h"
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtiny.clients.board.device import default_head
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.signing import (
    IMAGE_MAGIC,
    KEY_ADD,
    KEY_RETIRE,
    TLV_ED25519,
    TLV_INFO_MAGIC,
    TLV_KEYHASH,
    TLV_PROT_INFO_MAGIC,
    TLV_SEC_CNT,
    TLV_SHA256,
    TLV_SIG_PURE,
    KeyChange,
    key_hash,
    raw_public,
    sign_image,
    vector_keys,
)


def c_bytes(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    body = ",\n    ".join(rows) if rows else "0"
    return f"static const uint8_t {name}[{max(len(data), 1)}] GS_UNUSED = {{\n    {body}}};\n#define {name.upper()}_LEN {len(data)}u\n"


def tlv(t: int, data: bytes) -> bytes:
    return struct.pack("<HH", t, len(data)) + data


def build(
    payload: bytes,
    key: Ed25519PrivateKey,
    hdr_size: int = 32,
    prot: bytes | None = None,
    extra: bytes = b"",
    pure: bool = False,
) -> bytes:
    """An MCUboot image laid out by hand (header padding, no SEC_CNT, extra TLVs, a pure signature), signed like
    imgtool: the variants `sign_image` does not write."""
    parea = b"" if prot is None else struct.pack("<HH", TLV_PROT_INFO_MAGIC, 4 + len(prot)) + prot
    hdr = struct.pack("<IIHHIIBBHII", IMAGE_MAGIC, 0, hdr_size, len(parea), len(payload), 0, 1, 0, 0, 0, 0)
    signed = hdr + bytes(hdr_size - 32) + payload + parea
    digest = hashlib.sha256(signed).digest()
    sig = tlv(TLV_SIG_PURE, key.sign(signed)) if pure else tlv(TLV_ED25519, key.sign(digest))
    tlvs = extra + tlv(TLV_SHA256, digest) + tlv(TLV_KEYHASH, key_hash(raw_public(key))) + sig
    return signed + struct.pack("<HH", TLV_INFO_MAGIC, 4 + len(tlvs)) + tlvs


def render() -> str:
    k1, k2 = vector_keys()
    k3, k4, k5 = (Ed25519PrivateKey.from_private_bytes(bytes(range(a, a + 32))) for a in (64, 96, 128))
    payload = bytes(range(16))
    parts = [
        c_bytes("gs_pub1", raw_public(k1)),
        c_bytes("gs_pub2", raw_public(k2)),
        c_bytes("gs_pub3", raw_public(k3)),
        c_bytes("gs_keyhash1", key_hash(raw_public(k1))),
        "/* docs/protocol.md's vector: payload bytes(range(16)), counter 3, version 1.2.3+4, key 1 */\n",
        c_bytes("gs_img_ok", sign_image(payload, k1, 3, (1, 2, 3, 4))),
        c_bytes("gs_img_key2", sign_image(payload, k2, 5)),
        "/* the factory head (fedtiny.clients.board.device.default_head(), app/factory_head.h) signed by key 1, counter 1 */\n",
        c_bytes("gs_img_head", sign_image(encode_head_patch(default_head()), k1, 1)),
        c_bytes("gs_img_key3", sign_image(payload, k3, 5)),
        "/* a 0x200 header (imgtool --pad-header), no protected area (counter 0), an unknown TLV ignored */\n",
        c_bytes("gs_img_padded", build(payload, k1, 0x200, None, tlv(0x30, b"\x01\x02\x03"))),
        c_bytes("gs_img_pure", build(payload, k1, 32, tlv(TLV_SEC_CNT, struct.pack("<I", 1)), pure=True)),
        c_bytes(
            "gs_img_two_cnt",
            build(payload, k1, 32, tlv(TLV_SEC_CNT, struct.pack("<I", 1)) * 2),
        ),
        "/* KeyChange sequence on device 7 from {key 1}: ADD key 2 (counter 1, by key 1: the doc's vector), ADD key 3\n"
        " * (2, by key 1), ADD key 4 (3, by key 2), ADD key 5 (4, by key 1: NO_SPACE), RETIRE key 1 (4, by key 2).\n"
        " * RETIRE key 1 by itself (1: the last key, BAD_STATE); ADD key 2 signed by key 3 (never trusted) */\n",
        c_bytes("gs_pub4", raw_public(k4)),
        c_bytes("gs_kc_add2", KeyChange(KEY_ADD, 7, 1, raw_public(k2)).sign(k1).encode()),
        c_bytes("gs_kc_add3", KeyChange(KEY_ADD, 0, 2, raw_public(k3)).sign(k1).encode()),
        c_bytes("gs_kc_add4", KeyChange(KEY_ADD, 0, 3, raw_public(k4)).sign(k2).encode()),
        c_bytes("gs_kc_add5", KeyChange(KEY_ADD, 0, 4, raw_public(k5)).sign(k1).encode()),
        c_bytes("gs_kc_retire1", KeyChange(KEY_RETIRE, 0, 4, raw_public(k1)).sign(k2).encode()),
        c_bytes("gs_kc_retire_last", KeyChange(KEY_RETIRE, 0, 1, raw_public(k1)).sign(k1).encode()),
        c_bytes("gs_kc_by3", KeyChange(KEY_ADD, 0, 1, raw_public(k2)).sign(k3).encode()),
    ]
    return (
        "/* Generated by scripts/gen_signing_golden.py from fedtiny.link.signing. Do not edit. */\n"
        "#ifndef GOLDEN_SIGNING_H\n#define GOLDEN_SIGNING_H\n#include <stdint.h>\n"
        "#define GS_UNUSED __attribute__((unused)) /* each test file uses some of these */\n\n"
        + "\n".join(parts)
        + "\n#endif\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in header is stale")
    a = ap.parse_args()
    text = render()
    if a.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run scripts/gen_signing_golden.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
