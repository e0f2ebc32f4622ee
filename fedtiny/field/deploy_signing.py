"""The field-trial server signs every head it redeploys (``fedtiny serve --signing-key``).

The private key stays on the server: gateways forward the signed MCUboot image to their boards and never hold
a key that could sign for the fleet (docs/protocol.md section 7). Each redeploy carries a higher security
counter, so a board refuses any older head replayed to it (DOWNGRADE).

Counter rule: ``max(previous + 1, seconds since the UNIX epoch)``, the previous value persisted in the trial
directory (``security_counter.json``) before the image leaves the server. The persisted value makes counters
strictly increase across rounds, resumes and restarts of one trial; the clock makes a new trial directory
(or another server) start above every counter an earlier trial gave the same boards, without reading the
boards' anti-rollback floors first. A u32 holds these seconds until 2106.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedtiny.errors import FedTinyError
from fedtiny.link.blobs import encode_head_patch
from fedtiny.link.signing import key_hash, parse_image, raw_public, sign_image
from fedtiny.ondevice import Int8Head

COUNTER_FILE = "security_counter.json"
U32_MAX = 0xFFFFFFFF


class DeploySigner:
    """Signs head patches with strictly increasing security counters persisted in ``trial_dir``."""

    def __init__(self, key: Ed25519PrivateKey, trial_dir: Path, clock: float | None = None) -> None:
        self.key, self.path = key, Path(trial_dir) / COUNTER_FILE
        self._clock = clock  # tests pin the clock; None: time.time()
        self.key_id = key_hash(
            raw_public(key)
        ).hex()  # MCUboot's KEYHASH of the public key: what boards trust

    def last_counter(self) -> int:
        """The counter of the last image this trial signed (0: none yet)."""
        if not self.path.exists():
            return 0
        try:
            value = json.loads(self.path.read_text())["security_counter"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FedTinyError(f"{self.path}: unreadable security counter ({exc}); expected JSON") from exc
        if not isinstance(value, int) or not 0 <= value <= U32_MAX:
            raise FedTinyError(
                f"{self.path}: security_counter must be an integer in 0..{U32_MAX}, got {value!r}"
            )
        return value

    def next_counter(self) -> int:
        now = int(self._clock if self._clock is not None else time.time())
        counter = max(self.last_counter() + 1, now)
        if counter > U32_MAX:
            raise FedTinyError(f"{self.path}: the security counter would pass {U32_MAX} (u32)")
        return counter

    def sign_head(self, head: Int8Head) -> bytes:
        """The head's patch as a signed MCUboot image; its counter is persisted before it is returned."""
        counter = self.next_counter()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"security_counter": counter}) + "\n")
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new counter, never a torn file
        return sign_image(encode_head_patch(head), self.key, counter)


def check_signed_head(image: bytes, head: Int8Head) -> int:
    """The security counter of ``image`` after checking that it carries exactly ``head``'s patch.

    A gateway cannot verify the signature (boards do, with their trusted keys) but it refuses an image that
    does not match the head the server sent with it, so a mix-up is reported where it happened.
    """
    signed = parse_image(image)
    if signed.payload != encode_head_patch(head):
        raise FedTinyError("signed head image: its payload is not the head sent with it")
    return signed.security_counter
