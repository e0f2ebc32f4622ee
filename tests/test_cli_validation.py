"""Malformed input is refused before any work, in one line naming the file and the key, with exit code 2.

Issue 13: non-finite numbers and out-of-range drift knobs (item 12), conflicting drift options (item 8),
exclusive fraction-drawn groups (item 7), existing results directories (item 5), the CLI's help (item 17).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtiny.cli import cli
from fedtiny.config import scenario_to_toml
from fedtiny.errors import ScenarioError, TaskError
from fedtiny.plan import load_scenario, scenario_from_dict
from fedtiny.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _refused(p: Path, fragment: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(ScenarioError) as err:
        load_scenario(p, overrides)
    msg = str(err.value)
    assert fragment in msg, msg
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    return msg


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fedtiny: error: ")
    return lines[0]


# ---------------------------------------------------------------- item 12: non-finite and out-of-range values

DRIFT = "rounds = 5\n[[drift]]\nat = 2\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[train]\nlr = nan", "'train.lr' = nan; expected a finite number"),
        ("[strategy]\nfraction = nan", "'strategy.fraction' = nan; expected a finite number"),
        ("[strategy]\nmax_update_norm = nan", "'strategy.max_update_norm' = nan; expected a finite number"),
        ("[strategy]\nmax_update_norm = inf", "'strategy.max_update_norm' = inf; expected a finite number"),
        ("[train]\nmomentum = -inf", "'train.momentum' = -inf; expected a finite number"),
        ("[fleet]\ncondition = { gain = nan }", "'fleet.condition.gain' = nan; expected a finite number"),
        ("[fleet]\nspread = { gain = inf }", "'fleet.spread.gain' = inf; expected a finite number"),
        ("[fleet]\nboards = { nano33ble = nan }", "'fleet.boards.nano33ble' = nan; expected a finite number"),
        (DRIFT + "condition = { gain = nan }", "'drift[0].condition.gain' = nan; expected a finite number"),
        (
            DRIFT + "fraction = nan\ncondition = { gain = 0.5 }",
            "'drift[0].fraction' = nan; expected a finite number",
        ),
        ("[task]\nparams = { x = nan }", "'task.params.x' = nan; expected a finite number"),
        (
            DRIFT + "condition = { noise = -0.5 }",
            "'drift[0].condition.noise' = -0.5 is outside its range 0..10",
        ),
        (
            "[fleet]\ncondition = { speed_hz = -30 }",
            "'fleet.condition.speed_hz' = -30 is outside its range 1..200",
        ),
        (
            "[fleet]\ncondition = { resonance_hz = 7000 }",
            "'fleet.condition.resonance_hz' = 7000 is outside its range",
        ),
        ("[fleet]\ncondition = { load = 1.5 }", "'fleet.condition.load' = 1.5 is outside its range 0..1"),
        (
            "[fleet]\ncondition = { speed_hz = 24.0 }\nspread = { speed_hz = 30.0 }",
            "'fleet.spread.speed_hz' = 30: speed_hz 24 +/- 30 reaches -6, outside the range 1..200",
        ),
        ("[fleet]\nspread = { gain = 1.5 }", "'fleet.spread.gain' = 1.5: gain 1 +/- 1.5 reaches -0.5"),
        ("[fleet]\nspread = { gain = -0.1 }", "'fleet.spread.gain' = -0.1 is below the minimum 0"),
        (
            '[task]\nname = "digits"\n[fleet]\ncondition = { shift_px = 40.0 }',
            "'fleet.condition.shift_px' = 40 is outside its range -8..8",
        ),
        (
            '[task]\nname = "kws"\n[fleet]\ncondition = { gain = -1.0 }',
            "'fleet.condition.gain' = -1 is outside its range 0..100",
        ),
    ],
)
def test_non_finite_and_out_of_range_values_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    _refused(_write(tmp_path, text), fragment)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lr=nan", "'train.lr' = nan; expected a finite number (from --set train.lr)"),
        (
            "strategy.fraction=nan",
            "'strategy.fraction' = nan; expected a finite number (from --set strategy.fraction)",
        ),
        (
            "fleet.condition.gain=inf",
            "'fleet.condition.gain' = inf; expected a finite number (from --set fleet.condition.gain)",
        ),
        ("fleet.condition.speed_hz=-30", "'fleet.condition.speed_hz' = -30 is outside its range 1..200"),
    ],
)
def test_non_finite_overrides_are_refused(override: str, fragment: str) -> None:
    _refused(QUICKSTART, fragment, [override])


def test_cli_refuses_nan_in_one_line_before_any_work(tmp_path: Path) -> None:
    p = _write(tmp_path, "[strategy]\nmax_update_norm = nan\n")
    out = tmp_path / "out"
    line = _one_error_line(_cli("run", str(p), "--out", str(out)))
    assert line == f"fedtiny: error: {p}: 'strategy.max_update_norm' = nan; expected a finite number"
    assert not out.exists()
    line = _one_error_line(_cli("run", str(QUICKSTART), "--out", str(out), "--set", "train.lr=nan"))
    assert "'train.lr' = nan" in line and "--set train.lr" in line and str(QUICKSTART) in line
    assert not out.exists()


@pytest.mark.parametrize(
    "content", [bytes(range(256)), b"\xff\xfe\x00r\x00o\x00u\x00n\x00d\x00s", b"rounds = 3\n\x80\x81\n"]
)
def test_binary_or_non_utf8_scenario_is_one_line(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "garbage.toml"
    p.write_bytes(content)
    with pytest.raises(ScenarioError, match=r"not a TOML text file .* is not UTF-8"):
        load_scenario(p)
    line = _one_error_line(_cli("run", str(p)))
    assert line.startswith(f"fedtiny: error: {p}: not a TOML text file")


def test_binary_utf8_garbage_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "nul.toml"
    p.write_bytes(b"\x00\x01\x02 = \x03")
    line = _one_error_line(_cli("run", str(p)))
    assert f"{p}: not valid TOML" in line


def test_task_resolve_condition_checks_ranges() -> None:
    vib = get_task("vibration")
    with pytest.raises(
        TaskError, match=r"drift knob 'noise' of task 'vibration' = -0.5 is outside its range 0..10"
    ):
        vib.resolve_condition({"noise": -0.5})
    with pytest.raises(TaskError, match="must be finite"):
        vib.resolve_condition({"gain": float("nan")})
    assert vib.resolve_condition({"speed_hz": 24.0})["speed_hz"] == 24.0
    for name in ("vibration", "kws", "digits"):
        task = get_task(name)
        assert set(task.knob_ranges) == set(task.drift_knobs), name  # every reference knob has a range
        for knob, value in task.default_condition().items():  # the factory condition is valid
            lo, hi = task.knob_ranges[knob]
            assert lo <= value <= hi, (name, knob)


# ---------------------------------------------------------------- item 8: conflicting drift options


TWO = 'rounds = 5\n[[drift]]\nat = 1\nfraction = 0.3\ngroup = "a"\ncondition = { gain = 0.5 }\n[[drift]]\nat = 2\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            TWO + 'target = "a"\ngroup = "b"\nkind = "new_class"\nclasses = [1]',
            "'drift[1].group' = 'b' conflicts with 'drift[1].target' = 'a'",
        ),
        (
            TWO + 'target = "a"\nfraction = 0.5\ncondition = { noise = 0.1 }',
            "'drift[1].fraction' = 0.5 conflicts with 'drift[1].target' = 'a'",
        ),
        (
            DRIFT + 'kind = "label_shift"\ncondition = { gain = 0.5 }',
            "'drift[0].condition' means nothing for kind = 'label_shift'",
        ),
        (
            DRIFT + 'kind = "new_class"\nclasses = [1]\ncondition = { gain = 0.5 }',
            "'drift[0].condition' means nothing for kind = 'new_class'",
        ),
        (
            DRIFT + "condition = { gain = 0.5 }\nclasses = [1]",
            "'drift[0].classes' means nothing for kind = 'condition'",
        ),
        (
            DRIFT + 'kind = "label_shift"\nclasses = [1]',
            "'drift[0].classes' means nothing for kind = 'label_shift'",
        ),
        (
            DRIFT + "condition = { gain = 0.5 }\nalpha = 0.1",
            "'drift[0].alpha' means nothing for kind = 'condition'",
        ),
        (DRIFT + 'group = "all"\ncondition = { gain = 0.5 }', "'drift[0].group' = 'all' is reserved"),
        (DRIFT + 'group = ""\ncondition = { gain = 0.5 }', "'drift[0].group' is empty"),
        (
            DRIFT + 'target = "nope"\ncondition = { gain = 0.5 }',
            "'drift[0].target' = 'nope' is not a group of an earlier event",
        ),
    ],
)
def test_conflicting_drift_options_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    _refused(_write(tmp_path, text), fragment)


def test_targeted_event_keeps_the_target_group(tmp_path: Path) -> None:
    p = _write(tmp_path, TWO + 'target = "a"\nkind = "new_class"\nclasses = [1]')
    s = load_scenario(p)
    assert [(e.group, e.target) for e in s.drift] == [("a", ""), ("a", "a")]
    assert scenario_from_dict(tomllib.loads(scenario_to_toml(s))) == s  # the resolved file says group = "a"
    from fedtiny.fleet.data import build_plan
    from fedtiny.plan.resolve import fleet_spec, layout_of

    plan = build_plan(fleet_spec(s), layout_of(s))
    assert layout_of(s).groups == ["fleet", "a"]
    assert int((plan.group == 1).sum()) == 6  # 30% of 20 devices, all of them hit by both events


def test_cli_refuses_conflicting_drift_in_one_line(tmp_path: Path) -> None:
    p = _write(tmp_path, DRIFT + 'kind = "label_shift"\ncondition = { gain = 0.5 }\n')
    line = _one_error_line(_cli("run", str(p), "--out", str(tmp_path / "out")))
    assert f"{p}: 'drift[0].condition' means nothing" in line


# ---------------------------------------------------------------- item 7: exclusive fraction-drawn groups


def _groups(drift: list[dict[str, object]], devices: int = 60) -> tuple[list[str], list[int]]:
    from fedtiny.fleet.data import build_plan
    from fedtiny.plan.resolve import fleet_spec, layout_of

    s = scenario_from_dict(
        {"rounds": 8, "task": {"name": "digits"}, "fleet": {"devices": devices}, "drift": drift}
    )
    layout = layout_of(s)
    plan = build_plan(fleet_spec(s), layout)
    return layout.groups, np.bincount(plan.group, minlength=len(layout.groups)).tolist()


def test_fraction_drawn_groups_are_exclusive_and_have_their_size() -> None:
    groups, sizes = _groups(
        [
            {"at": 2, "fraction": 0.5, "group": "a", "condition": {"brightness": 0.3}},
            {"at": 5, "fraction": 0.3, "group": "b", "condition": {"contrast": 0.5}},
        ]
    )
    assert groups == ["fleet", "a", "b"] and sizes == [12, 30, 18]  # a 30% group of 60 devices holds 18
    groups, sizes = _groups(
        [
            {"at": 2, "fraction": 0.6, "group": "a", "condition": {"brightness": 0.3}},
            {"at": 5, "fraction": 0.4, "group": "b", "condition": {"contrast": 0.5}},
        ]
    )
    assert sizes == [0, 36, 24]


def test_fractions_of_distinct_groups_above_one_are_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, TWO + 'fraction = 0.8\ngroup = "b"\ncondition = { gain = 0.4 }')
    _refused(
        p,
        "'drift[1].fraction' = 0.8: fraction-drawn groups are exclusive and other groups already hold 0.3 of the fleet (a 0.3)",
    )
    p = _write(tmp_path, TWO + 'fraction = 0.7\ngroup = "b"\ncondition = { gain = 0.4 }')
    assert [e.fraction for e in load_scenario(p).drift] == [0.3, 0.7]


def test_cli_reports_group_sizes() -> None:
    from fedtiny.cli import _group_sizes

    assert (
        _group_sizes({"fleet_stats": {"groups": {"fleet": 14, "remounted": 6}}})
        == "groups: fleet 14, remounted 6 devices"
    )
    assert _group_sizes({}) == ""


def _strip(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# ---------------------------------------------------------------- item 5: existing results directories


def test_run_refuses_an_existing_results_directory(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "qs"
    out.mkdir(parents=True)
    (out / "scenario.resolved.toml").write_text("rounds = 400\n")
    (out / "rounds.csv").write_text("round\n1\n")
    line = _one_error_line(_cli("run", str(QUICKSTART), "--out", str(out), "--set", "rounds=10"))
    assert line == (
        f"fedtiny: error: {out}: holds the results of an earlier run (scenario.resolved.toml); "
        "pass --force to replace them, or --out DIR for another directory"
    )
    assert (out / "scenario.resolved.toml").read_text() == "rounds = 400\n"  # untouched
    assert (out / "rounds.csv").read_text() == "round\n1\n"
    # the default directory (output.dir) too
    p = _write(tmp_path, f'output.dir = "{out.as_posix()}"\n', "other.toml")
    assert "holds the results of an earlier run" in _one_error_line(_cli("run", str(p)))


def test_run_refuses_a_file_as_results_directory(tmp_path: Path) -> None:
    f = tmp_path / "taken"
    f.write_text("x")
    line = _one_error_line(_cli("run", str(QUICKSTART), "--out", str(f)))
    assert line == f"fedtiny: error: {f}: exists and is not a directory; pass --out DIR for another one"


class _FakeRunner:
    """Stands in for fedtiny.runner: records what `fedtiny run` hands it and writes the resolved scenario."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, Path, bool]] = []

    def run_scenario(
        self, s: object, out_dir: Path, *, resume: bool = False, **_: object
    ) -> dict[str, object]:
        self.calls.append((s, out_dir, resume))
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (out_dir / "scenario.resolved.toml").write_text(scenario_to_toml(s))  # type: ignore[arg-type]
        return {
            "initial_accuracy": 0.5,
            "final_accuracy": 0.75,
            "rounds": 3,
            "wall_seconds": 1.0,
            "fleet_stats": {"groups": {"fleet": 14, "remounted": 6}},
        }


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> _FakeRunner:
    import types

    fake = _FakeRunner()
    module = types.ModuleType("fedtiny.runner")
    module.run_scenario = fake.run_scenario  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedtiny.runner", module)
    return fake


def test_force_replaces_and_the_resolved_scenario_records_the_directory(
    tmp_path: Path, fake_runner: _FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    out = tmp_path / "qs"
    res = runner.invoke(cli, ["run", str(QUICKSTART), "--out", str(out), "--set", "rounds=7"])
    assert res.exit_code == 0, res.output
    assert "groups: fleet 14, remounted 6 devices" in res.output
    recorded = load_scenario(out / "scenario.resolved.toml")
    assert recorded.output.dir == str(out.resolve()) and recorded.rounds == 7
    res = runner.invoke(cli, ["run", str(QUICKSTART), "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output and len(fake_runner.calls) == 1
    res = runner.invoke(cli, ["run", str(QUICKSTART), "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert load_scenario(out / "scenario.resolved.toml").rounds == 10
    # --resume uses the existing directory and keeps its record
    res = runner.invoke(cli, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    s, used, resume = fake_runner.calls[-1]
    assert used == out and resume and s.output.dir == str(out.resolve())  # type: ignore[attr-defined]
    # without --out: output.dir of the scenario, recorded as the absolute path actually used
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["run", str(QUICKSTART)])
    assert res.exit_code == 0, res.output
    assert fake_runner.calls[-1][1] == Path("runs/quickstart")
    assert load_scenario(tmp_path / "runs/quickstart/scenario.resolved.toml").output.dir == str(
        tmp_path / "runs/quickstart"
    )


# ---------------------------------------------------------------- item 17: version, help, keys, scenarios


def test_version() -> None:
    from fedtiny import __version__

    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fedtiny {__version__}"


def test_run_help_says_what_a_scenario_is_and_where_the_keys_are() -> None:
    res = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    text = " ".join(_strip(res.output).split())
    assert res.exit_code == 0
    assert "A scenario is a TOML file that describes one experiment" in text
    assert "fedtiny keys" in text and "fedtiny scenarios" in text and "--force" in text


def _leaf_classes(cls: type) -> list[type]:
    """The schema's dataclasses counted by their leaf fields (sections and [[drift]] stand for their keys)."""
    import dataclasses

    from fedtiny.config.schema import DriftEvent

    out = [cls]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            out += _leaf_classes(type(default))
    if cls.__name__ == "Scenario":
        out.append(DriftEvent)
    return out


def test_keys_lists_every_schema_key_with_type_default_range_and_doc() -> None:
    import dataclasses

    from fedtiny.config.schema import DataSection, DriftEvent, FleetSection, ModelSection, Scenario
    from fedtiny.plan.keys import key_rows

    res = CliRunner().invoke(cli, ["keys"])
    assert res.exit_code == 0
    text = res.output
    rows = key_rows()
    keys = {k for k, *_ in rows}
    for section, cls in [
        ("data", DataSection),
        ("model", ModelSection),
        ("fleet", FleetSection),
        ("drift[]", DriftEvent),
    ]:
        assert {f"{section}.{f.name}" for f in dataclasses.fields(cls)} <= keys  # [data] and [model] included
    classes = _leaf_classes(Scenario)  # each section (and [[drift]]) is one non-leaf field of Scenario
    assert len(rows) == len(keys) == sum(len(dataclasses.fields(c)) for c in classes) - (len(classes) - 1)
    assert "[data]" in text and "[model]" in text and "[[drift]]" in text
    assert "devices = 20  # integer, 1..1,000,000\n    simulated devices" in text
    assert 'name = "fedavg"  # string, one of: fedavg, fedavgm' in text
    assert "lr = 0.05  # number, 1e-06..10\n    local SGD learning rate" in text
    assert "speed_hz = 29.95  # number, 1..200" in text  # the drift knobs with their ranges
    res = CliRunner().invoke(cli, ["keys", "fleet"])
    assert res.exit_code == 0 and "[fleet]" in res.output and "[train]" not in res.output
    res = CliRunner().invoke(cli, ["keys", "flete"])
    assert res.exit_code == 2 and "unknown section 'flete'" in res.output


def test_scenarios_lists_the_ready_scenarios_with_their_first_comment_line() -> None:
    res = _cli("scenarios")
    assert res.returncode == 0, res.stderr
    for p in sorted((ROOT / "scenarios").glob("*.toml")):
        first = next(ln for ln in p.read_text().splitlines() if ln.startswith("#")).lstrip("#").strip()
        assert re.search(rf"scenarios/{re.escape(p.name)}\s+{re.escape(first)}", res.stdout), p.name
    assert "fedtiny run scenarios/quickstart.toml" in res.stdout


def test_scenarios_from_another_directory(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", "scenarios"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert (
        res.returncode == 0 and "quickstart.toml" in res.stdout
    )  # falls back to the source tree's scenarios/
    line = _one_error_line(_cli("scenarios", str(tmp_path)))
    assert line == f"fedtiny: error: {tmp_path}: no scenario files (*.toml) found"


def test_emulate_keeps_its_flash_state_out_of_the_current_directory() -> None:
    import tempfile

    res = CliRunner().invoke(cli, ["emulate", "--help"], terminal_width=200)
    assert res.exit_code == 0
    from fedtiny.cli_link import emulate

    default = emulate.__defaults__[1].default  # type: ignore[index]
    assert Path(default).parent == Path(tempfile.gettempdir())
