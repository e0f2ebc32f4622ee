"""`fedtiny init` fits the recipe to the user's data (issue 24): the federated probe, the class-order rule that
never relabels a model silently, the run's class-mapping line, and the report's strategy advice.

The model is made here with plain TensorFlow (a Dense backbone and head ending in SOFTMAX, 4 classes, no label
metadata), the data are npz files written here: devices with their own offsets, class names stored with them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.plan.resolve import fleet_spec

C, D = 4, 12
NAMES = ("a", "b", "c", "d")


def _protos() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(C, D)).astype(np.float32)


def _examples(
    rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, C, n)
    x = _protos()[y] + 0.9 * rng.normal(size=(n, D)).astype(np.float32) + shift
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's int8 model trained on a 'factory' speaker: output i is class NAMES[i]."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x, y = _examples(np.random.default_rng(1), 2000)
    inp = keras.Input((D,), batch_size=1)
    h = keras.layers.Dense(16, activation="relu")(inp)
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(h)))
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=4, batch_size=32, verbose=0)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(200))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    p = tmp_path_factory.mktemp("model") / "m.tflite"
    p.write_bytes(bytes(conv.convert()))
    return p


def _data(
    path: Path, names: tuple[str, ...] = NAMES, looks_like: list[int] | None = None, devices: int = 10
) -> Path:
    """Devices with their own offset; ``names[y]`` is example's class in the data's order. ``looks_like[c]``:
    the class whose prototype the data's class ``c`` is drawn from (a sensor on which two classes swap
    appearance: the names are right, the model confuses them)."""
    rng = np.random.default_rng(5)
    xs, ys, ds, ts = [], [], [], []
    for dv in range(devices):
        off = rng.normal(size=D).astype(np.float32) * 0.8
        y = rng.integers(0, C, 80)
        proto = np.asarray(looks_like if looks_like is not None else range(C))[y]
        x = _protos()[proto] + 0.9 * rng.normal(size=(80, D)).astype(np.float32) + off
        xs.append(x)
        ys.append(y)
        ds.append(np.full(80, dv))
        ts.append(np.arange(80, dtype=np.float64))
    np.savez(
        path,
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        device=np.concatenate(ds),
        time=np.concatenate(ts),
        classes=np.array(names),
    )
    return path


def _init(model: Path, data: Path, out: Path, *extra: str) -> str:
    res = CliRunner().invoke(
        cli, ["init", "--model", str(model), "--data", str(data), "--out", str(out), *extra]
    )
    assert res.exit_code == 0, res.output
    return res.output


def test_probe_prints_its_table_writes_a_grid_recipe_and_is_deterministic(
    model: Path, tmp_path: Path
) -> None:
    from fedtiny.init_probe import grid
    from fedtiny.plan import load_scenario

    data = _data(tmp_path / "d.npz")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out1 = _init(model, data, tmp_path / "a" / "s.toml", "--seed", "3")
    _init(model, data, tmp_path / "b" / "s.toml", "--seed", "3")
    assert "federated probe: 10 rounds on 10 devices" in out1 and "<- picked" in out1
    for name in ("fedavg", "fedavgm", "fedadam", "fedyogi"):
        assert re.search(rf"^\s+{name} ", out1, re.M), name
    text = (tmp_path / "a" / "s.toml").read_text()
    assert text == (tmp_path / "b" / "s.toml").read_text()  # the same file for the same seed
    assert "seed = 3" in text and "<- this one" in text and "federated probe" in text
    s = load_scenario(tmp_path / "a" / "s.toml")
    assert s.seed == 3
    picked = re.search(r"^\s+(\w+)(?: server_lr=(\S+))? lr=(\S+) .*<- picked", out1, re.M)
    assert picked, out1
    name, server_lr, lr = picked.group(1), float(picked.group(2) or 0), float(picked.group(3))
    assert name in {c.name for c in grid(lr)}
    assert (s.strategy.name, s.strategy.server_lr, s.train.lr) == (name, server_lr, lr)
    # the probe never scores the devices' local test sets: it holds out part of their training streams
    assert "held-out examples of their training data" in out1


def test_no_probe_writes_fedavg_and_says_so(model: Path, tmp_path: Path) -> None:
    out = _init(model, _data(tmp_path / "d.npz"), tmp_path / "s.toml", "--no-probe")
    assert "federated probe" not in out
    text = (tmp_path / "s.toml").read_text()
    assert 'name = "fedavg"' in text and "--no-probe" in text


def test_data_order_above_chance_is_kept_though_a_permutation_scores_higher(
    model: Path, tmp_path: Path
) -> None:
    """The names are right; the model confuses b and c on this data, so swapping them scores higher. The data's
    order is well above chance: it is kept, both figures are printed and the permutation is written commented."""
    data = _data(tmp_path / "d.npz", looks_like=[0, 2, 1, 3])
    out = _init(model, data, tmp_path / "s.toml", "--no-probe")
    m = re.search(r"own order is kept \((\d+)% on (\d+) examples.*another order scores (\d+)%", out)
    assert m, out
    kept, better = int(m.group(1)), int(m.group(3))
    assert 35 < kept < better
    text = (tmp_path / "s.toml").read_text()
    assert '\nclasses = ["a", "b", "c", "d"]' in text
    assert '# classes = ["a", "c", "b", "d"]' in text


def test_near_chance_data_order_is_rematched(model: Path, tmp_path: Path) -> None:
    """Names stored in a rotated order (no name in the model's place): near chance, so matched by predictions."""
    perm = np.array([1, 2, 3, 0])  # the data's class i is the model's class perm[i]
    names = tuple(NAMES[p] for p in perm)
    data = _data(tmp_path / "d.npz", names=names, looks_like=list(perm))
    out = _init(model, data, tmp_path / "s.toml", "--no-probe")
    assert "near chance" in out and re.search(r"\(\d+% on \d+ examples, below \d+%\)", out)
    text = (tmp_path / "s.toml").read_text()
    assert '\nclasses = ["a", "b", "c", "d"]' in text and "# classes = [" not in text


def test_near_chance_threshold() -> None:
    from fedtiny.init_scenario import near_chance

    assert near_chance(12, 400) == pytest.approx(2 / 12)
    assert near_chance(4, 400) == pytest.approx(0.35)
    assert near_chance(2, 400) == pytest.approx(0.6)
    assert near_chance(4, 20) == pytest.approx(0.25 + 3 * np.sqrt(0.25 * 0.75 / 20))


def test_run_prints_the_class_mapping_when_it_differs_from_the_datas_order(
    model: Path, tmp_path: Path
) -> None:
    from fedtiny.fleet.user_data import load_user_model_and_data
    from fedtiny.plan import scenario_from_dict

    data = _data(tmp_path / "d.npz")
    lines: list[str] = []
    s = scenario_from_dict(
        {"model": {"tflite": str(model), "classes": ["b", "a", "c", "d"]}, "data": {"path": str(data)}}
    )
    load_user_model_and_data(fleet_spec(s), s.model, lines.append)
    assert any(
        "outputs 0..3 are b, a, c, d (model.classes); the data's own order (a, b, c, d)" in x for x in lines
    )
    lines.clear()
    s = scenario_from_dict(
        {"model": {"tflite": str(model), "classes": list(NAMES)}, "data": {"path": str(data)}}
    )
    load_user_model_and_data(fleet_spec(s), s.model, lines.append)
    assert not any(x.startswith("classes:") for x in lines)


def test_report_names_a_strategy_change_when_the_curve_is_still_rising() -> None:
    from fedtiny.plan import scenario_from_dict
    from fedtiny.report.html import headline_html, recipe_advice

    s = scenario_from_dict({"name": "x", "rounds": 20, "task": {"name": "digits"}})
    rising = [0.60 + 0.012 * r for r in range(21)]
    flat = [0.60 + 0.1 * (1 - 0.5**r) for r in range(21)]
    fast_local = [0.60 + 0.2 * (1 - 0.5**r) for r in range(21)]
    tip = recipe_advice(s, {"federated": {"all": rising}, "federated_se": {"all": [0.01] * 21}})
    assert "still rising at round 20" in tip
    assert "--set strategy.name=fedadam --set strategy.server_lr=0.03" in tip and "--set rounds=40" in tip
    assert recipe_advice(s, {"federated": {"all": flat}, "local-only": {"all": flat}}) == ""
    slow = recipe_advice(s, {"federated": {"all": flat[:1] + [0.61] * 20}, "local-only": {"all": fast_local}})
    assert "much slower than local-only" in slow and "strategy.name=fedadam" in slow
    adam = scenario_from_dict(
        {
            "name": "x",
            "rounds": 20,
            "task": {"name": "digits"},
            "strategy": {"name": "fedadam", "server_lr": 0.01},
        }
    )
    assert "--set strategy.server_lr=0.03" in recipe_advice(adam, {"federated": {"all": rising}})
    doc = headline_html(s, {"rounds_done": 20}, {}, {"federated": {"all": rising}})
    assert "What to try next" in doc and "strategy.name=fedadam" in doc
