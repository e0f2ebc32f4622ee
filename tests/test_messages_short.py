"""One-line errors that help (issue 19 §4): a misspelled key gets "did you mean", a csv without the label column
names a few of its columns, not hundreds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtiny.errors import DataError, ScenarioError
from fedtiny.plan import scenario_from_dict


def test_a_misspelled_key_gets_did_you_mean() -> None:
    with pytest.raises(ScenarioError, match=r"unknown key 'fleet.devcies'; did you mean 'fleet.devices'\?"):
        scenario_from_dict({"fleet": {"devcies": 3}})
    with pytest.raises(ScenarioError, match=r"unknown key 'rouns'; did you mean 'rounds'\?"):
        scenario_from_dict({"rouns": 3})
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict({"zzz": 3})
    assert "did you mean" not in str(e.value)


def test_a_missing_label_column_names_a_few_columns(tmp_path: Path) -> None:
    from fedtiny.data._npz_csv import read_csv

    p = tmp_path / "wide.csv"
    header = [f"s{i}" for i in range(386)]
    p.write_text(",".join(header) + "\n" + ",".join("0.5" for _ in header) + "\n")
    with pytest.raises(DataError) as e:
        read_csv(p, "label", "", "")
    msg = str(e.value)
    assert "s0, s1, s2, s3, s4, s5, ... (386 in all)" in msg and "s385" not in msg and len(msg) < 300
