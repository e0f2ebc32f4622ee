"""Gateway-side partial sums (fedtiny/server/partial.py): for a strategy that reads only the weighted mean update,
gateways send one sum instead of one head per device, and the rounds are those of per-device replies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.simulated.gateway import handle
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.ondevice import FloatHead
from fedtiny.plan.resolve import fleet_spec, round_spec
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.partial import SUM_W, combine, reduce_updates
from fedtiny.server.transports import InlineTransport
from tests.test_server_rounds import _rows, scenario


class _Spy:
    """The inline transport, recording which kind of reply every gateway sent."""

    def __init__(self) -> None:
        self.inner = InlineTransport(handle)
        self.partial: list[bool] = []

    def connect(self, gateways: int) -> None:
        self.inner.connect(gateways)

    def exchange(self, kind, head, cfg, per_gateway):  # type: ignore[no-untyped-def]
        parts, failed = self.inner.exchange(kind, head, cfg, per_gateway)
        if kind == "train":
            self.partial += [SUM_W in p for p in parts]
        return parts, failed


def _run(s, out: Path, per_device: bool) -> tuple[FleetServer, _Spy]:  # type: ignore[no-untyped-def]
    layout, head = prepare_synthetic(fleet_spec(s), out)
    srv = FleetServer(round_spec(s), layout, out / "fleet", head, out_dir=out)
    if per_device:
        srv.strategy.per_device = True  # the same FedAvg-family strategy, fed every device's update
    spy = _Spy()
    srv.run(spy)
    return srv, spy


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"strategy": {"uplink": "int8"}},
        {"strategy": {"clip_norm": 0.05}, "fleet": {"faulty_fraction": 0.3, "fault": "nan"}},
        {
            "strategy": {"name": "fedadam", "max_update_norm": 0.4},
            "fleet": {"faulty_fraction": 0.2, "fault": "scale"},
        },
        {"strategy": {"name": "fedavgm"}, "train": {"momentum": 0.5}},
    ],
    ids=["fedavg", "int8-uplink", "clipping-and-nan", "fedadam-norm", "fedavgm"],
)
def test_partial_sums_give_the_rounds_of_per_device_updates(tmp_path: Path, over: dict) -> None:
    s = scenario(**over)
    red, spy = _run(s, tmp_path / "sums", per_device=False)
    assert spy.partial and all(spy.partial)  # every gateway sent sums
    ref, spy_ref = _run(s, tmp_path / "devices", per_device=True)
    assert spy_ref.partial and not any(spy_ref.partial)
    assert _rows(red) == _rows(ref)
    assert red.rejected_reasons == ref.rejected_reasons and red.rejected_total == ref.rejected_total
    assert np.array_equal(red.head.weights, ref.head.weights) and np.array_equal(red.head.bias, ref.head.bias)
    logs = sorted(
        (tmp_path / "devices" / "device_rounds").iterdir()
    )  # which devices were accepted, per round
    assert logs
    for f in logs:
        assert (tmp_path / "sums" / "device_rounds" / f.name).read_bytes() == f.read_bytes(), f.name


def test_gateways_train_in_chunks_and_merge_their_sums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway trains its devices in chunks of REDUCE_CHUNK (memory bounded at a million devices); merged
    chunk sums give the rounds of per-device replies."""
    import fedtiny.clients.simulated.gateway as gw

    s = scenario(fleet={"faulty_fraction": 0.2, "fault": "inf"})
    monkeypatch.setattr(gw, "REDUCE_CHUNK", 3)
    red, spy = _run(s, tmp_path / "sums", per_device=False)
    assert all(spy.partial)
    ref, _ = _run(s, tmp_path / "devices", per_device=True)
    assert _rows(red) == _rows(ref) and red.rejected_reasons == ref.rejected_reasons
    assert np.array_equal(red.head.weights, ref.head.weights)


def test_robust_strategies_and_personalization_keep_per_device_replies(tmp_path: Path) -> None:
    for i, over in enumerate(({"strategy": {"name": "krum"}}, {"strategy": {"personalize": 0.5}})):
        s = scenario(**over)
        _, spy = _run(s, tmp_path / str(i), per_device=False)
        assert spy.partial and not any(spy.partial)


def test_combine_is_independent_of_reply_order_and_checks_shapes() -> None:
    rng = np.random.default_rng(3)
    g = FloatHead(rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.float32))
    parts = []
    for lo in (0, 50, 120):
        k = 30
        w = (g.weights[None] + 0.01 * rng.standard_normal((k, 4, 6))).astype(np.float32)
        b = (0.01 * rng.standard_normal((k, 4))).astype(np.float32)
        w[3] = np.nan  # one non-finite update per gateway
        parts.append(
            reduce_updates(
                w,
                b,
                rng.integers(1, 9, k),
                rng.random(k).astype(np.float32),
                np.arange(lo, lo + k),
                g,
                10.0,
                0.0,
            )
        )
    a, b_ = combine(parts, g), combine(parts[::-1], g)
    assert np.array_equal(a.step_w, b_.step_w) and np.array_equal(a.device_ids, b_.device_ids)
    assert a.rejected == 3 and a.reasons["non_finite"] == 3 and len(a.device_ids) == 87
    assert list(a.device_ids) == sorted(a.device_ids)
    bad = dict(parts[0])
    bad[SUM_W] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="partial sums have shape"):
        combine([bad], g)
