"""A user's recordings may hold examples without a label (issue 22): npz ``y = -1``, an empty csv label cell, a
``_unlabelled`` folder beside the class folders. They load with label -1, go only to the devices' training
streams (pool label -1), never to a test set, a calibration or a representative sample, and count for no class.
Any other negative, non-integer or text-among-numbers label is one line naming the file and the example.

The data are tiny and made here; the model (for the fleet and `fedtiny init`) is a small Dense classifier made
with plain TensorFlow, as users make theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.data import load_recordings
from fedtiny.errors import DataError
from fedtiny.fleet.recorded import device_streams

C, D = 4, 12


def _protos() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(C, D)).astype(np.float32)


def _npz(path: Path, devices: int = 6, per_device: int = 40, unlabelled: float = 0.4, seed: int = 5) -> Path:
    """Devices with their own offset and a share of examples whose label is -1 (more on later devices)."""
    rng = np.random.default_rng(seed)
    xs, ys, ds, ts = [], [], [], []
    for dv in range(devices):
        y = np.arange(per_device) % C  # every class on every device
        x = _protos()[y] + 0.6 * rng.normal(size=(per_device, D)).astype(np.float32)
        share = unlabelled * (0.5 + dv / max(1, devices - 1))  # devices differ: 0.5x .. 1.5x the share
        y = np.where(rng.random(per_device) < share, -1, y)
        y[0] = y[0] if y[0] >= 0 else 0  # at least one labelled example per device
        xs.append(x + 0.3 * rng.normal(size=D).astype(np.float32))
        ys.append(y)
        ds.append(np.full(per_device, dv))
        ts.append(np.arange(per_device, dtype=np.float64))
    np.savez(
        path, x=np.concatenate(xs), y=np.concatenate(ys), device=np.concatenate(ds), time=np.concatenate(ts)
    )
    return path


# -- the three formats -----------------------------------------------------------------------------------------


def test_npz_label_minus_one_is_no_label(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((6, 3)), y=[0, -1, 2, -1, 1, 2], classes=["a", "b", "c"])
    rec = load_recordings(p)
    assert rec.y.tolist() == [0, -1, 2, -1, 1, 2] and rec.classes == ("a", "b", "c")
    assert rec.labelled.tolist() == [True, False, True, False, True, True]
    # mapped onto the model's order: -1 stays -1 (never indexes a class)
    assert load_recordings(p, classes=["c", "b", "a"]).y.tolist() == [2, -1, 0, -1, 1, 0]
    # bare numbers: the classes are 0..max of the labelled ones; float -1.0 is no label too
    np.savez(p, x=np.zeros((4, 3)), y=np.array([1.0, -1.0, 0.0, -1.0]))
    rec = load_recordings(p)
    assert rec.y.tolist() == [1, -1, 0, -1] and rec.classes == ("0", "1")
    # names: "" (and "-1") is no label, and no class
    np.savez(p, x=np.zeros((4, 3)), y=np.array(["up", "", "down", "-1"]))
    rec = load_recordings(p)
    assert (
        rec.y.tolist() == [1, -1, 0, -1] and rec.classes == ("down", "up") and rec.data_classes == rec.classes
    )


def test_csv_empty_label_cell_is_no_label(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("label,device,a,b\n1,x,0.1,0.2\n,x,0.3,0.4\n0,y,0.5,0.6\n-1,y,0.7,0.8\n2,y,0.9,1.0\n")
    rec = load_recordings(p)
    assert rec.y.tolist() == [1, -1, 0, -1, 2] and rec.classes == ("0", "1", "2")
    assert rec.sources[1] == "d.csv:3" and np.allclose(rec.raw[1], [0.3, 0.4])
    p.write_text("label,a\ncat,1\n,2\ndog,3\n\n,4\n")
    rec = load_recordings(p)
    assert rec.y.tolist() == [0, -1, 1, -1] and rec.classes == ("cat", "dog")
    assert load_recordings(p, classes=["dog", "cat"]).y.tolist() == [1, -1, 0, -1]


def test_unlabelled_folder_is_no_class(tmp_path: Path) -> None:
    for folder, n in (("a", 2), ("b", 3), ("_unlabelled", 4)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            np.save(tmp_path / folder / f"{i}.npy", np.full(5, float(i)))
    rec = load_recordings(tmp_path)
    assert rec.classes == ("a", "b") and rec.y.tolist() == [0, 0, 1, 1, 1, -1, -1, -1, -1]
    assert rec.sources[5:] == [f"_unlabelled/{i}.npy" for i in range(4)]
    # the model's classes fix the order; _unlabelled is never an unknown class
    assert load_recordings(tmp_path, classes=["b", "a", "c"]).y.tolist() == [1, 1, 0, 0, 0, -1, -1, -1, -1]
    # max_per_class: each class capped, the unlabelled keep the data's labelled share (4 of 5 labelled -> 2 of 4)
    sub = load_recordings(tmp_path, max_per_class=2, seed=1)
    assert sorted(sub.y.tolist()) == [-1, -1, -1, 0, 0, 1, 1]
    # only unlabelled examples: no class folder
    for f in ("a", "b"):
        for q in (tmp_path / f).iterdir():
            q.unlink()
        (tmp_path / f).rmdir()
    with pytest.raises(DataError, match=r": no class folders"):
        load_recordings(tmp_path)


def test_no_labelled_example_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 2)), y=[-1, -1, -1])
    with pytest.raises(DataError, match=r"d.npz: no labelled examples"):
        load_recordings(p)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (
            [0, 1, -2],
            r"d.npz: label -2 of example 2 is negative \(expected 0..number of classes-1, or -1: no ",
        ),
        ([0, 1.5, 1], r"d.npz: label 1.5 of example 1 is not an integer"),
        ([0, np.nan, 1], r"d.npz: label nan of example 1 is not a finite number"),
        (["a", "b", "zebra"], r"d.npz: unknown label 'zebra' of example 2 \(expected one of a, b\)"),
    ],
)
def test_bad_npz_labels_name_the_example(tmp_path: Path, y: list[object], match: str) -> None:
    p = tmp_path / "d.npz"
    arrays: dict[str, np.ndarray] = {"x": np.zeros((3, 2)), "y": np.array(y)}
    if isinstance(y[0], str):
        arrays["classes"] = np.array(["a", "b"])
    np.savez(p, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds
    with pytest.raises(DataError, match=match) as e:
        load_recordings(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        ("-2", r"d.csv: label -2 on line 4 is negative"),
        ("1.5", r"d.csv: label 1.5 on line 4 is not an integer"),
        ("abc", r"d.csv: label 'abc' on line 4 is text, the other labels are numbers"),
    ],
)
def test_bad_csv_labels_name_the_line(tmp_path: Path, cell: str, match: str) -> None:
    p = tmp_path / "d.csv"
    p.write_text(f"label,a,b\n0,1,2\n,1,2\n{cell},1,2\n1,1,2\n")
    with pytest.raises(DataError, match=match) as e:
        load_recordings(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


# -- the split: unlabelled examples train, never test ----------------------------------------------------------


def test_unlabelled_examples_only_ever_train(tmp_path: Path) -> None:
    rec = load_recordings(_npz(tmp_path / "d.npz"))
    assert (~rec.labelled).sum() > 30
    st = device_streams(rec.y, rec.device, rec.time, rec.device_names, 0, 0.5, 0.25, 0.5, 0, "d")
    lab = rec.labelled
    for k in range(len(st.names)):
        train, test = st.stream[k, : st.n_train[k]], st.test[k, : st.n_test[k]]
        assert lab[test].all() and len(test) == max(1, round(0.25 * lab[np.r_[train, test]].sum()))
        # the test set is the device's latest labelled examples
        assert rec.time is not None and rec.time[test].min() > rec.time[train[lab[train]]].max()
        assert (~lab[train]).any()
    assert sorted(np.r_[st.stream[st.stream >= 0], st.test[st.test < len(rec)]].tolist()) == list(
        range(len(rec))
    )
    # a device with no labelled example has no test set: it is left out
    y = rec.y.copy()
    y[rec.device == 2] = -1
    st2 = device_streams(y, rec.device, rec.time, rec.device_names, 0, 0.5, 0.25, 0.5, 0, "d")
    assert "2" not in st2.names and len(st2.names) == 5
    # no device ids: the partition gives every device a labelled example to test and one more to train
    y = np.where(np.arange(len(rec)) % 5 == 0, rec.y.clip(0), -1)
    st3 = device_streams(y, None, None, (), 12, 0.3, 0.25, 0.5, 0, "d")
    assert len(st3.names) == 12 and (st3.n_test >= 1).all() and (st3.n_train >= 1).all()
    assert (y[st3.test[st3.test < len(y)]] >= 0).all()
    with pytest.raises(DataError, match=r"d: 3 labelled examples cannot feed fleet.devices = 4 devices"):
        device_streams(np.array([0, 1, 2] + [-1] * 9), None, None, (), 4, 0.5, 0.25, 0.5, 0, "d")


# -- the fleet and `fedtiny init` on a real model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's int8 classifier of C classes (Dense backbone, Dense head, SOFTMAX), no label metadata."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    y = np.random.default_rng(1).integers(0, C, 600)
    x = (_protos()[y] + 0.6 * np.random.default_rng(2).normal(size=(600, D))).astype(np.float32)
    inp = keras.Input((D,), batch_size=1)
    h = keras.layers.Dense(16, activation="relu")(inp)
    m = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(C)(h)))
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=3, batch_size=32, verbose=0)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(100))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    p = tmp_path_factory.mktemp("model") / "m.tflite"
    p.write_bytes(bytes(conv.convert()))
    return p


def test_the_fleet_writes_pool_label_minus_one_and_tests_labelled_examples(
    model: Path, tmp_path: Path
) -> None:
    from fedtiny.fleet.user_data import load_user_model_and_data, prepare_user_fleet
    from fedtiny.plan import scenario_from_dict
    from fedtiny.plan.resolve import fleet_spec

    data = _npz(tmp_path / "d.npz")
    s = scenario_from_dict({"rounds": 4, "model": {"tflite": str(model)}, "data": {"path": str(data)}})
    lines: list[str] = []
    rec, um = load_user_model_and_data(fleet_spec(s), s.model, lines.append)
    n_unl = int((~rec.labelled).sum())
    assert any(re.search(rf"{n_unl} \(\d+\.\d%\) without a label \(-1\)", x) for x in lines), lines
    uf = prepare_user_fleet(fleet_spec(s), s.train, rec, um.tflite, tmp_path / "out", lines.append)
    root = tmp_path / "out" / "fleet"
    pool_labels = np.load(root / "pool_labels.npy")
    assert pool_labels[:-1].tolist() == rec.y.tolist()  # -1 where the data has no label
    st = np.load(root / "streams.npz")
    test = st["test"][st["test"] < len(rec)]
    assert (pool_labels[test] >= 0).all() and (np.load(root / "global_test_labels.npy") >= 0).all()
    trains = st["stream"][st["stream"] >= 0]
    assert (pool_labels[trains] < 0).sum() == n_unl
    assert any(f"{n_unl} of them without a label" in x for x in lines), lines
    assert 0 < uf.central_accuracy <= 1 and 0 < uf.int8_accuracy <= 1


def test_init_reports_the_labelled_share_and_writes_labels(model: Path, tmp_path: Path) -> None:
    from fedtiny.plan import load_scenario

    data = _npz(tmp_path / "d.npz")
    y = np.load(data)["y"]
    out = tmp_path / "s.toml"
    res = CliRunner().invoke(cli, ["init", "--model", str(model), "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    share = f"{100 * np.mean(y >= 0):.1f}% of the examples are labelled"
    m = re.search(
        r"^labels: (\d+\.\d)% of the examples are labelled; per device \(labelled / its examples, 6 devices\) "
        r"min (\d+\.\d)%, median (\d+\.\d)%, max (\d+\.\d)%; the examples without a label \(-1\) are used unlabelled",
        res.output,
        re.M,
    )
    assert m and share in res.output, res.output
    low, med, high = (float(m.group(i)) for i in (2, 3, 4))
    assert low < med < high < 100
    assert "federated probe: 10 rounds on 6 devices" in res.output  # the probe runs on the labelled examples
    text = out.read_text()
    section = text[text.index("[labels]") : text.index("[fleet]")]
    assert f"# {share}" in section and "pseudo" in section and "\nfraction = 1.0" in section
    assert f"{int((y < 0).sum())} without a label (see [labels])" in text
    s = load_scenario(out)
    assert s.labels.fraction == 1.0 and s.labels.pseudo == 0.0
    # fully labelled data: the section says so and changes nothing
    full = tmp_path / "full.npz"
    arrays = dict(np.load(data))
    arrays["y"] = np.where(arrays["y"] < 0, 1, arrays["y"])
    np.savez(full, **arrays)
    out2 = tmp_path / "s2.toml"
    res = CliRunner().invoke(
        cli, ["init", "--model", str(model), "--data", str(full), "--out", str(out2), "--no-probe"]
    )
    assert res.exit_code == 0 and "labels: every example is labelled" in res.output, res.output
    assert "[labels]\n# every example is labelled\nfraction = 1.0" in out2.read_text()
    assert load_scenario(out2).labels.all_labelled


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("d.csv", "label,a,b\n0,1,2\n,1,2\n-2,1,2\n", r"d.csv: label -2 on line 4 is negative"),
        ("d.csv", "label,a,b\n0,1,2\n1.5,1,2\n", r"d.csv: label 1.5 on line 3 is not an integer"),
        ("d.csv", "label,a,b\n0,1,2\n1,1,2\nx,1,2\n", r"d.csv: label 'x' on line 4 is text"),
        ("d.npz", {"x": np.zeros((3, 12)), "y": [0, -2, -1]}, r"d.npz: label -2 of example 1 is negative"),
        (
            "d.npz",
            {"x": np.zeros((3, 12)), "y": [0, 1.5, -1]},
            r"d.npz: label 1.5 of example 1 is not an integer",
        ),
    ],
)
def test_bad_labels_are_one_line_with_exit_2(
    model: Path, tmp_path: Path, name: str, content: object, match: str
) -> None:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content)
    else:
        np.savez(p, **content)  # type: ignore[arg-type]
    res = CliRunner().invoke(
        cli,
        ["init", "--model", str(model), "--data", str(p), "--out", str(tmp_path / "s.toml"), "--no-probe"],
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fedtiny: error: {p}: "), res.output
    assert re.search(match, lines[0]) and "Traceback" not in res.output, res.output
    assert not (tmp_path / "s.toml").exists()


def test_a_run_on_recordings_with_unlabelled_examples_trains_on_the_labelled_and_pseudo_labels(
    model: Path, tmp_path: Path
) -> None:
    """End to end (inline engine): the examples without a label reach the caches unlabelled, the devices train
    on the labelled ones and, with labels.pseudo, on their own confident labels; rounds.csv counts both."""
    import csv

    from fedtiny.plan import scenario_from_dict
    from fedtiny.runner import run_scenario

    data = _npz(tmp_path / "d.npz")
    s = scenario_from_dict(
        {
            "rounds": 3,
            "model": {"tflite": str(model)},
            "data": {"path": str(data)},
            "labels": {"pseudo": 0.6},
            "eval": {"baselines": True},
            "runtime": {"engine": "inline"},
            "output": {"plots": False},
        }
    )
    out = tmp_path / "run"
    summary = run_scenario(s, out, log=lambda *_: None)
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert len(rows) == 4 and int(rows[1]["labels_used"]) > 0 and int(rows[1]["pseudo_used"]) > 0
    # every pseudo-labelled example is one the data has no label for: its accuracy cannot be known
    assert rows[1]["pseudo_accuracy"] == "nan" and summary["labels"]["pseudo_accuracy"] is None
    lab = summary["labels"]
    assert lab["totals"]["labels_used"] == sum(int(r["labels_used"] or 0) for r in rows[1:])
    assert lab["totals"]["labels_wrong"] == 0  # recorded labels are used as they are
