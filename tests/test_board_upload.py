"""Safe redeploy: resume after a cut link, power cut at every flash write, fault-injecting links."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pytest

from fedtiny.clients.board import BoardConfig, PowerCut, VirtualBoard, default_head
from fedtiny.errors import DeviceError, LinkError
from fedtiny.link.faulty import FaultyTransport
from fedtiny.link.messages import ImageKind, SlotState, Status, TrainRequest
from fedtiny.link.session import BoardSession
from fedtiny.link.transport import InProcessTransport
from fedtiny.ondevice import head_forward_int8

KEY = bytes(range(32))
GOLDEN = np.random.default_rng(1).integers(-128, 128, (4, 64)).astype(np.int8)


def test_upload_cut_midway_resumes_after_reset(tmp_path) -> None:
    f = str(tmp_path / "b.flash")
    image = os.urandom(20000)
    board = VirtualBoard(BoardConfig(fleet_key=KEY, slot_size=32768), f)
    link = FaultyTransport(InProcessTransport(board), disconnect_at=9000)
    s = BoardSession(link, key=KEY)
    s.hello()
    with pytest.raises(LinkError):
        s.upload(image, ImageKind.TFLITE, chunk=1024, window=2)
    got = board.meta.slots[1].received
    assert 0 < got < len(image)
    board = VirtualBoard(BoardConfig(fleet_key=KEY, slot_size=32768), f)  # power cycle: RAM gone
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    sent = []
    orig = s.t.write
    s.t.write = lambda d: (sent.append(len(d)), orig(d))[1]  # type: ignore[method-assign]
    st = s.upload(image, ImageKind.TFLITE, chunk=1024)
    assert st.received == len(image) and sum(sent) < len(image) - got + 2000  # only the rest was sent
    assert board.image(st.slot) == image


def _deploy(board: VirtualBoard, head) -> None:
    s = BoardSession(InProcessTransport(board), key=KEY)
    s.hello()
    s.deploy_head(head, GOLDEN)


def test_power_cut_at_every_flash_write(tmp_path) -> None:
    old, new = default_head(), default_head(seed=11)
    cfg = BoardConfig(fleet_key=KEY, slot_size=4096, max_payload=512)
    ref = VirtualBoard(cfg, None)
    start = ref.flash.writes
    _deploy(ref, new)
    n_writes = ref.flash.writes - start
    assert n_writes >= 5
    for cut in range(1, n_writes + 1):
        f = str(tmp_path / f"b{cut}.flash")
        board = VirtualBoard(cfg, f)
        board.flash.cut_at_write = board.flash.writes + cut
        with pytest.raises(PowerCut):
            _deploy(board, new)
        board = VirtualBoard(cfg, f)  # power back on
        assert board.head.equals(old) or board.head.equals(new), f"cut at write {cut}: partial model"
        conf = board.meta.slots[board.meta.confirmed]
        assert conf.state == SlotState.CONFIRMED
        _deploy(board, new)  # and the redeploy completes afterwards
        assert board.head.equals(new)
        assert VirtualBoard(cfg, f).head.equals(new)


def test_many_redeploys_over_faulty_link() -> None:
    """1% byte corruption + random disconnects (some with a board reset): every board ends on a verified
    model (old or new, never partial) and every update is counted exactly once."""
    n = int(os.environ.get("FEDTINY_FAULT_REDEPLOYS", "200"))
    rng = random.Random(0)
    cfg = BoardConfig(fleet_key=KEY, slot_size=4096, max_payload=512, rx_window=4)
    feats = np.random.default_rng(2).integers(-128, 128, (40, 64)).astype(np.int8)
    labels = np.random.default_rng(3).integers(0, 10, 40)
    seen: set[tuple[int, int]] = set()
    per_device: dict[int, int] = {}
    heads = [default_head(seed=i) for i in range(4)]
    n_deployed = 0
    for i in range(n):
        cfg.device_id = i
        board = VirtualBoard(cfg, None)
        link = FaultyTransport(
            InProcessTransport(board),
            seed=i,
            corrupt=0.01,
            disconnect_rate=0.002,
            on_disconnect=(board.reboot if rng.random() < 0.3 else None),
        )
        s = BoardSession(link, timeout=0.0, retries=12, key=KEY, payload_limit=48)
        s.op_timeout = 0.0
        new = heads[1 + i % 3]
        counted, to_ack, deployed = False, 0, False
        for _attempt in range(40):
            try:
                s.hello()
                if not counted:
                    s.push_samples(feats, labels, clear=True)
                    try:
                        s.train(TrainRequest(1, 8, 0.01, 0.0, 0.0, 0.0, 1, 1))
                    except DeviceError as e:
                        assert e.status == Status.UPDATE_PENDING, e
                    upd = s.read_update()
                    if (upd.device_id, upd.update_id) not in seen:  # the gateway's exactly-once rule
                        seen.add((upd.device_id, upd.update_id))
                        per_device[upd.device_id] = per_device.get(upd.device_id, 0) + 1
                    counted, to_ack = True, upd.update_id
                if to_ack:
                    try:
                        s.ack_update(to_ack)
                    except DeviceError as e:
                        assert e.status == Status.NO_UPDATE, e  # the board rebooted: the update is gone
                    to_ack = 0
                if not deployed:
                    st = s.status()
                    if st.slots[st.active].state == SlotState.TESTING:
                        s.rollback()
                    s.deploy_head(new, GOLDEN[:1])
                    deployed = True
                break
            except (LinkError, DeviceError):
                continue
        board.reboot()  # whatever happened, the board boots a complete, verified model
        conf = board.meta.slots[board.meta.confirmed]
        assert conf.state == SlotState.CONFIRMED
        image = board.image(board.meta.confirmed)
        assert hashlib.sha256(image).digest() == conf.sha256
        assert board.head.equals(heads[0]) or board.head.equals(new)
        if deployed:
            n_deployed += 1
            assert board.head.equals(new)
            assert np.array_equal(head_forward_int8(board.head, GOLDEN), head_forward_int8(new, GOLDEN))
    assert all(v == 1 for v in per_device.values())
    assert len(per_device) >= n * 0.9 and n_deployed >= n * 0.9
