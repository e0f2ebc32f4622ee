"""KEYS and KEY_CHANGE of the virtual board (docs/protocol.md section 7): the trusted Ed25519 public keys."""

from __future__ import annotations

from fedtiny.clients.board.api import Board
from fedtiny.clients.board.replies import Reply, err
from fedtiny.errors import ProtocolError
from fedtiny.link.messages import Status
from fedtiny.link.signing import KEY_ADD, MAX_TRUSTED_KEYS, KeyChange, KeySet, SignatureError, key_hash


def key_set(b: Board) -> bytes:
    return KeySet(MAX_TRUSTED_KEYS, b.meta.key_counter, [key_hash(k) for k in b.meta.keys]).encode()


def keys(b: Board, p: bytes) -> Reply:
    if p:
        raise ProtocolError("KEYS takes no payload")
    return Reply(payload=key_set(b))


def key_change(b: Board, p: bytes) -> Reply:
    """Checks in order: layout (MALFORMED), keys provisioned (UNSUPPORTED), device id and signature by a trusted
    key (AUTH_FAILED), counter (DOWNGRADE), effect (NO_SPACE, BAD_STATE); then one atomic metadata write."""
    try:
        kc = KeyChange.decode(p)
    except SignatureError as e:
        raise ProtocolError(str(e)) from None
    m = b.meta
    if not m.keys:
        return err(Status.UNSUPPORTED, "no public key provisioned: this board uses the HMAC fleet key")
    if kc.device_id not in (0, b.cfg.device_id):
        return err(
            Status.AUTH_FAILED, f"key change for device {kc.device_id}, this is device {b.cfg.device_id}"
        )
    try:
        kc.verify(m.keys)
    except SignatureError as e:
        return err(Status.AUTH_FAILED, str(e))
    present = kc.public_key in m.keys
    done = present if kc.op == KEY_ADD else not present
    if kc.counter < m.key_counter or (kc.counter == m.key_counter and not done):
        return err(
            Status.DOWNGRADE, f"key counter {kc.counter} <= the board's {m.key_counter} (replayed change)"
        )
    if kc.counter == m.key_counter:  # this very change, applied before (a host retrying after a reset)
        return Reply(payload=key_set(b))
    new = list(m.keys)
    if kc.op == KEY_ADD and not present:
        if len(new) >= MAX_TRUSTED_KEYS:
            return err(Status.NO_SPACE, f"the board holds {MAX_TRUSTED_KEYS} keys: retire one first")
        new.append(kc.public_key)
    elif kc.op != KEY_ADD and present:
        if len(new) == 1:
            return err(Status.BAD_STATE, "cannot retire the last trusted key (add its successor first)")
        new.remove(kc.public_key)
    m.keys, m.key_counter = new, kc.counter
    b.persist()  # keys and counter in one record: a power cut leaves the old set or the new one
    return Reply(payload=key_set(b))
