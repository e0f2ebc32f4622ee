"""Partial, late, noisy labels and pseudo-labels on the simulated fleet (docs/labels.md), run in-process."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from fedtiny.clients.simulated.gateway import handle
from fedtiny.config.schema import LabelsSection
from fedtiny.fleet.data import LABELS_FILE, FleetData
from fedtiny.fleet.labels import LabelSchedule, fleet_schedule, given_labels, label_view
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.ondevice import Int8Head
from fedtiny.ondevice.pseudo import pseudo_threshold, training_set
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, round_spec
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


def scenario(labels: dict | None = None, devices: int = 24, rounds: int = 4) -> object:
    d: dict = {
        "name": "lab",
        "seed": 11,
        "rounds": rounds,
        "task": {"name": "digits"},
        "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {
            "devices": devices,
            "devices_per_gateway": 8,
            "samples_per_device": 8,
            "test_samples_per_device": 10,
            "cache_size": 12,
            "new_samples_per_round": 3,
            "pool_per_class": 16,
            "variants": 1,
        },
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.2},
        "strategy": {"fraction": 1.0},
        "eval": {"baseline_devices": 8},
        "runtime": {"engine": "inline"},
    }
    if labels is not None:
        d["labels"] = labels
    return scenario_from_dict(d)


def run(s, out: Path) -> FleetServer:
    layout, head = prepare_synthetic(fleet_spec(s), out)
    srv = FleetServer(round_spec(s), layout, out / "fleet", head, out_dir=out)
    srv.run(InlineTransport(handle))
    return srv


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetData, Int8Head]:
    """A prepared generated fleet of 400 devices (no training): what label_view reads."""
    out = tmp_path_factory.mktemp("labfleet")
    _, head = prepare_synthetic(fleet_spec(scenario({"fraction": 0.5}, devices=400)), out)
    return FleetData(out / "fleet"), head


def view(data: FleetData, head: Int8Head, round_: int, **labels: object):
    devs = np.arange(data.board.shape[0], dtype=np.int64)
    idx, _ = data.cache_indices(devs, round_)
    counts = data.cache_counts(devs, round_)
    sched = LabelSchedule(LabelsSection(**labels), data.seed, head.num_classes)  # type: ignore[arg-type]
    return label_view(sched, data, devs, round_, idx, counts, head), idx, counts


def test_all_labelled_is_todays_fleet(tmp_path: Path) -> None:
    """The defaults write no label file, and the rows have no label columns: the fleet of before."""
    srv = run(scenario(), tmp_path)
    assert not (tmp_path / "fleet" / LABELS_FILE).exists()
    assert all(not r.labels for r in srv.rows)
    assert "labels_used" not in srv.rows[-1].flat()


def test_no_labels_no_learning(tmp_path: Path) -> None:
    """fraction = 0 and no pseudo-labels: no device trains, the head never changes, every curve is the static
    model's (local-only learning has nothing to learn from either)."""
    srv = run(scenario({"fraction": 0.0}), tmp_path)
    head0 = prepare_synthetic(fleet_spec(scenario({"fraction": 0.0})), tmp_path / "again")[1]
    assert srv.head is not None
    np.testing.assert_array_equal(srv.head.weights, head0.weights)
    np.testing.assert_array_equal(srv.head.bias, head0.bias)
    assert srv.head.output_scale == head0.output_scale
    for r in srv.rows[1:]:
        assert r.devices_trained == 0
        assert r.labels["labels_used"] == 0 and r.labels["pseudo_used"] == 0
        assert r.accuracy == srv.rows[0].accuracy
        assert r.accuracy_local == r.accuracy_static


def test_partial_labels_train_and_count(tmp_path: Path) -> None:
    srv = run(scenario({"fraction": 0.5, "noise": 0.2, "pseudo": 0.6, "pseudo_weight": 0.5}), tmp_path)
    used = sum(r.labels["labels_used"] for r in srv.rows[1:])
    assert used > 0 and sum(r.devices_trained for r in srv.rows[1:]) > 0
    flat = srv.rows[-1].flat()
    assert {"labels_used", "labels_late", "labels_wrong", "pseudo_used", "pseudo_accuracy"} <= set(flat)
    assert sum(r.labels["pseudo_used"] for r in srv.rows[1:]) > 0


def test_a_late_label_is_used_first_d_rounds_later(fleet: tuple[FleetData, Int8Head]) -> None:
    data, head = fleet
    d = 2
    for t in range(0, 6):
        v, idx, counts = view(data, head, t, delay_rounds=d)
        j, r, _ = data.slot_rounds(np.arange(len(counts)), t)
        n = idx.shape[1]
        expect = (np.asarray(r)[:, :n] + d <= t) & (np.arange(n)[None, :] < counts[:, None])
        np.testing.assert_array_equal(v.counts, expect.sum(axis=1))
        assert v.tally.labels_late == int(expect.sum())
        # the kept slots are exactly the ones whose label has arrived, in slot order
        for k in (0, 17, 399):
            np.testing.assert_array_equal(v.idx[k, : v.counts[k]], idx[k][expect[k]])


def test_fraction_share_and_noise_rate_within_binomial_interval(fleet: tuple[FleetData, Int8Head]) -> None:
    data, head = fleet
    v, idx, counts = view(data, head, 3, fraction=0.4, noise=0.25)
    total = int(counts.sum())
    for share, hits, n in (
        (0.4, v.tally.labels_used, total),
        (0.25, v.tally.labels_wrong, v.tally.labels_used),
    ):
        half = 3.3 * math.sqrt(share * (1 - share) / n)  # 99.9% interval
        assert abs(hits / n - share) < half, (hits, n, share)
    y = data.labels[idx % data.n_examples]
    # a wrong label is another class, uniformly: never the true one
    for k in range(len(counts)):
        kept = v.idx[k, : v.counts[k]]
        true = data.labels[kept % data.n_examples]
        wrong = v.labels[k, : v.counts[k]] != true
        assert (v.labels[k, : v.counts[k]][wrong] != true[wrong]).all()
    assert y.min() >= 0


def test_budget_limits_labels_per_collection_round(fleet: tuple[FleetData, Int8Head]) -> None:
    data, head = fleet
    v, _, counts = view(data, head, 5, fraction=1.0, budget_per_round=1)
    j, r, _ = data.slot_rounds(np.arange(len(counts)), 5)
    # cached samples come from rounds 0 (initial, 8 samples, partly overwritten) .. 5: at most one label each
    rounds_cached = np.array([len(np.unique(np.asarray(r)[k, : counts[k]])) for k in range(len(counts))])
    assert (v.counts <= rounds_cached).all() and (v.counts >= 1).all()


def test_noise_matrix_rows(fleet: tuple[FleetData, Int8Head]) -> None:
    """An identity matrix changes nothing; a matrix that maps every class to class 0 labels everything 0."""
    data, head = fleet
    c = head.num_classes
    ident = np.eye(c).tolist()
    v, idx, counts = view(data, head, 2, noise_matrix=ident, fraction=0.999999)
    assert v.tally.labels_wrong == 0
    zero = [[1.0] + [0.0] * (c - 1) for _ in range(c)]
    v0, _, _ = view(data, head, 2, noise_matrix=zero, fraction=0.999999)
    for k in range(5):
        assert (v0.labels[k, : v0.counts[k]] == 0).all()


def test_pseudo_labels_are_the_reference_training_set(fleet: tuple[FleetData, Int8Head]) -> None:
    """The fleet's pseudo-labels, slots and weights are fedtiny.ondevice.pseudo.training_set's, device by
    device (the function the virtual board and the C firmware are tested against)."""
    data, head = fleet
    v, idx, counts = view(data, head, 3, fraction=0.3, pseudo=0.55, pseudo_weight=0.25)
    assert v.tally.pseudo_used > 0
    devs = np.arange(len(counts))
    sched = LabelSchedule(LabelsSection(fraction=0.3), data.seed, head.num_classes)
    held, _, _ = given_labels(sched, data, devs, 3, idx, counts)
    thr = pseudo_threshold(0.55, head.num_classes)
    for k in range(0, len(counts), 37):
        ref = training_set(head, np.asarray(data.pool2d[idx[k]]), held[k], int(counts[k]), thr, 0.25)
        n = int(v.counts[k])
        assert n == len(ref.slots)
        np.testing.assert_array_equal(v.idx[k, :n], idx[k][ref.slots])
        np.testing.assert_array_equal(v.labels[k, :n], ref.labels)
        w = v.weights[k, :n] if v.weights is not None else np.ones(n, np.float32)
        np.testing.assert_array_equal(w, ref.weights)


def test_labels_spread_per_device(fleet: tuple[FleetData, Int8Head]) -> None:
    data, head = fleet
    sched = LabelSchedule(
        replace(LabelsSection(), fraction=0.5, spread={"fraction": 0.3}), 1, head.num_classes
    )
    f = sched.knob(np.arange(1000), 0.5, "fraction", 0x1AB3)
    assert f.min() >= 0.2 - 1e-9 and f.max() <= 0.8 + 1e-9 and f.std() > 0.1


def test_a_drift_event_changes_the_labels_of_its_devices_from_its_round_on(tmp_path: Path) -> None:
    """drift[].labels: the event's devices get no label for what they collect from round 2 on; the other
    devices, and what they collected before, keep the section's labels."""
    s = scenario({"fraction": 1.0, "delay_rounds": 0}, devices=60)
    d = {
        "drift": [
            {
                "at": 2,
                "fraction": 0.5,
                "group": "quiet",
                "condition": {"brightness": 0.2},
                "labels": {"fraction": 0.0},
            }
        ]
    }
    s = scenario_from_dict({**asdict(s), **d})
    _, head = prepare_synthetic(fleet_spec(s), tmp_path)
    data = FleetData(tmp_path / "fleet")
    sched = fleet_schedule(data, head.num_classes)
    assert sched is not None and sched.events
    devs = np.arange(60)
    quiet = np.load(tmp_path / "fleet" / "group.npy") == 1
    assert 20 < quiet.sum() < 40
    idx, _ = data.cache_indices(devs, 4)
    counts = data.cache_counts(devs, 4)
    held, _, _ = given_labels(sched, data, devs, 4, idx, counts)
    _, r, _ = data.slot_rounds(devs, 4)
    r = np.asarray(r)[:, : idx.shape[1]]
    valid = np.arange(idx.shape[1])[None, :] < counts[:, None]
    assert (held[quiet[:, None] & (r >= 2) & valid] == -1).all()
    assert (held[quiet[:, None] & (r < 2) & valid] >= 0).all()
    assert (held[~quiet[:, None] & valid] >= 0).all()


def test_bad_label_settings_are_refused() -> None:
    from fedtiny.errors import ScenarioError

    for bad, match in (
        ({"noise_matrix": [[1.0, 0.0], [0.5]]}, "row 1 has 1 entries"),
        ({"noise_matrix": [[0.7, 0.7], [0.5, 0.5]]}, "sums to 1.4"),
        ({"spread": {"delay": 1.0}}, "unknown; expected fraction or noise"),
        ({"pseudo": 0.9}, "pseudo-labels would never be used"),
    ):
        with pytest.raises(ScenarioError, match=match):
            scenario(bad)
    with pytest.raises(ScenarioError, match=r"drift\[0\]\.labels\.delay_rounds' = 1.5"):
        scenario_from_dict(
            {
                "drift": [{"at": 1, "condition": {"noise": 0.1}, "labels": {"delay_rounds": 1.5}}],
                "task": {"name": "digits"},
            }
        )


def test_device_logs_show_labels_per_device_and_devices_without_any(tmp_path: Path) -> None:
    """device_rounds: per sampled device the given labels and pseudo-labels it trained on; a device with none
    has status no_labels. A label two rounds late is used first two rounds after its sample."""
    from fedtiny.finish import concat_device_log

    run(scenario({"fraction": 0.3, "delay_rounds": 2}, rounds=4), tmp_path)
    concat_device_log(tmp_path)
    z = np.load(tmp_path / "device_rounds.npz")
    names = list(z["status_names"])
    assert names[-1] == "no_labels"
    by_round = {int(r): int(z["labels_used"][z["round"] == r].sum()) for r in np.unique(z["round"])}
    # 8 initial samples (round 0) and 3 per round: labels arrive from round 2 on, and only then
    assert by_round[1] == 0 and by_round[2] > 0
    assert (z["status"][z["round"] == 1] == names.index("no_labels")).all()
    trained = z["status"] == names.index("trained")
    assert (z["labels_used"][trained] > 0).all()
