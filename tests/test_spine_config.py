"""Scenario files: defaults, overrides, and one clear line for every mistake."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedtiny.config import scenario_to_toml
from fedtiny.errors import ScenarioError
from fedtiny.plan import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_quickstart_loads_with_types_and_defaults() -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.toml")
    assert s.name == "quickstart" and s.task.name == "vibration"
    assert isinstance(s.train.lr, float) and s.fleet.devices == 20
    assert s.drift and s.drift[0].condition["resonance_hz"] == 3500.0
    assert s.model.head_inputs == 64  # a default


def test_set_overrides_any_key() -> None:
    s = load_scenario(
        ROOT / "scenarios" / "quickstart.toml",
        ["rounds=50", "fleet.devices=7", 'strategy.name="median"', "train.lr=0.2"],
    )
    assert (s.rounds, s.fleet.devices, s.strategy.name, s.train.lr) == (50, 7, "median", 0.2)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("roundz = 3", "unknown key 'roundz'"),
        ("[fleet]\ndevicez = 3", "unknown key 'fleet.devicez'"),
        ('rounds = "ten"', "'rounds' expected an integer"),
        ("rounds = 0", "'rounds' = 0 is below the minimum 1"),
        ("[train]\nlr = -1.0", "'train.lr' = -1.0 is below the minimum"),
        ('[strategy]\nname = "fedbest"', "expected one of: fedavg"),
        ('[task]\nname = "nope"', "expected one of"),
        ("[fleet]\ncondition = { warp = 1.0 }", "'fleet.condition.warp' is not a drift knob"),
        ("rounds = 3\n[[drift]]\nat = 9", "'drift[0].at' = 9 is after the last round"),
        ('[fleet]\nboard = "pdp11"', "unknown board 'pdp11'"),
        ("rounds = = 3", "not valid TOML"),
    ],
)
def test_bad_scenarios_name_file_key_and_expectation(tmp_path: Path, text: str, fragment: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert fragment in msg and str(p) in msg and "\n" not in msg


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "none.toml")
    with pytest.raises(ScenarioError, match="--set fleet.devices"):
        load_scenario(ROOT / "scenarios" / "quickstart.toml", ["fleet.devices=-3"])


def test_resolved_scenario_round_trips() -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.toml", ["rounds=7"])
    text = scenario_to_toml(s)
    again = scenario_from_dict(tomllib.loads(text))
    assert again == s


def test_cli_rejects_malformed_scenario_with_one_line_and_nonzero_exit(tmp_path: Path) -> None:
    p = _write(tmp_path, "[fleet]\ndevices = 'many'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "run", str(p)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"fedtiny: error: {p}: 'fleet.devices' expected an integer, got 'many'"]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_every_ready_scenario_is_valid(path: Path, tmp_path: Path) -> None:
    import tomllib

    overrides = []
    if tomllib.loads(path.read_text()).get("data", {}).get("path"):
        # its model and recordings are made by an example script (examples/byom_kws): stand-ins that exist
        with (
            pytest.raises(ScenarioError, match="file or folder not found") if not _made(path) else _nothing()
        ):
            load_scenario(path)
        (tmp_path / "m.tflite").write_bytes(b"")
        (tmp_path / "d").mkdir()
        overrides = [f'model.tflite="{tmp_path / "m.tflite"}"', f'data.path="{tmp_path / "d"}"']
    s = load_scenario(path, overrides)
    assert s.rounds >= 1 and s.fleet.devices >= 1


def _made(path: Path) -> bool:
    import tomllib

    raw = tomllib.loads(path.read_text())
    return all((path.parent / raw[s][k]).exists() for s, k in (("model", "tflite"), ("data", "path")))


def _nothing():  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext()


def test_resume_refuses_overrides_and_a_missing_run(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "fedtiny.cli", "run"]
    proc = subprocess.run(
        run + ["--resume", str(tmp_path), "--set", "rounds=3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "give no scenario file and no --set" in proc.stderr
    proc = subprocess.run(run + ["--resume", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr and "Traceback" not in proc.stderr
