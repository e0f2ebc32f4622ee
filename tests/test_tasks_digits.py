"""Digits task: sampling from scikit-learn's digits, determinism, drift knobs, model shape."""

from __future__ import annotations

import numpy as np
import pytest

from fedtiny.errors import TaskError
from fedtiny.tasks import get_task
from fedtiny.tasks.digits import render

TASK = get_task("digits")


def test_shapes_range_determinism() -> None:
    labels = np.arange(20) % 10
    a = TASK.generate(labels, np.random.default_rng(3))
    assert a.shape == (20, 16, 16, 1) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, TASK.generate(labels, np.random.default_rng(3)))
    assert not np.allclose(a, TASK.generate(labels, np.random.default_rng(4)))


def test_render_identity_and_rotation() -> None:
    img = np.zeros((1, 8, 8), dtype=np.float32)
    img[0, 1, 2] = 1.0  # a dot up-left of centre
    same = render(img, np.zeros(1), np.ones(1), np.zeros((1, 2)), size=8)
    np.testing.assert_allclose(same[0], img[0], atol=1e-6)
    moved = render(img, np.zeros(1), np.ones(1), np.array([[1.0, 2.0]]), size=8)
    assert moved[0, 2, 4] == pytest.approx(1.0)
    rot = render(img, np.array([180.0]), np.ones(1), np.zeros((1, 2)), size=8)
    assert rot[0, 6, 5] == pytest.approx(1.0, abs=1e-5)


def test_classes_are_the_digits() -> None:
    # a nearest-class-mean classifier on clean renders separates the classes: labels are honoured
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    x = TASK.generate(labels, rng, {"noise": 0.0}).reshape(len(labels), -1)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(10)])
    pred = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels).mean() > 0.7  # chance is 0.1


def test_subsets_are_disjoint() -> None:
    tr, te = get_task("digits", subset="train"), get_task("digits", subset="test")
    assert not set(tr._table[tr._table > 0].tolist()) & set(te._table[te._table > 0].tolist())
    assert tr._counts.sum() + te._counts.sum() == 1797
    with pytest.raises(TaskError, match="subset"):
        get_task("digits", subset="val")


@pytest.mark.parametrize(
    "cond",
    [{"rotation_deg": 30.0}, {"contrast": 0.5}, {"brightness": 0.3}, {"noise": 0.2}, {"shift_px": 2.0}],
)
def test_drift_changes_inputs(cond: dict[str, float]) -> None:
    labels = np.arange(100) % 10
    base = TASK.generate(labels, np.random.default_rng(1))
    other = TASK.generate(labels, np.random.default_rng(2))
    drifted = TASK.generate(labels, np.random.default_rng(1), cond)

    def stats(x):
        return np.concatenate([x.mean(0), x.std(0)])

    assert np.abs(stats(drifted) - stats(base)).mean() > 2 * np.abs(stats(other) - stats(base)).mean()


def test_model() -> None:
    pytest.importorskip("keras")
    model = TASK.build_model()
    assert model.input_shape == (1, 16, 16, 1)
    assert model.output_shape == (1, 10)
    assert model.get_layer("head").kernel.shape == (64, 10)
    assert model.get_layer("head").get_config()["activation"] == "linear"
