"""A hard kill of `fedtiny run` leaves nothing running and nothing writing (issue 19): SIGKILL of the process
alone, or of its whole process group, ends every process it started (SuperLink, SuperExec, flwr-simulation,
Ray) within seconds (fedtiny.lifeline), the directory is not marked complete, and `--resume` then ends with
the rows of an uninterrupted run. The run directory's lock refuses a second run while the owner lives and is
taken over (said so) once it is dead. SIGHUP (a closed terminal) stops a run as SIGTERM does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run_interrupt import (
    _check_interrupted,
    _rows,
    _run_and_signal,
    _runtime_processes,
    _session_processes,
)

from fedtiny import runlock
from fedtiny.errors import FedTinyError

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "scenarios" / "quickstart.toml")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedtiny.cli", *args]


def _round(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint" / "latest.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def _start(out: Path, args: list[str], until_round: int) -> tuple[subprocess.Popen[bytes], Path]:
    """A `fedtiny run` in its own session, returned once round ``until_round`` is checkpointed."""
    err = out.parent / f"{out.name}.{len(list(out.parent.glob(out.name + '.*')))}.stderr"
    with err.open("w") as fh:
        proc = subprocess.Popen(_cli(*args), stdout=fh, stderr=fh, start_new_session=True, cwd=ROOT)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and _round(out) < until_round:
        time.sleep(0.1)
    assert proc.poll() is None, err.read_text()[-3000:]
    return proc, err


def _hard_kill(out: Path, proc: subprocess.Popen[bytes], group: bool) -> float:
    """SIGKILL the run (alone or its process group); 10 s later nothing of it is left and the directory is
    not complete. Returns the seconds until its last process was gone."""
    at_kill = _round(out)
    t0 = time.time()
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()
    gone = None
    while time.time() - t0 < 10:
        left = _session_processes(proc.pid) + _runtime_processes(out)
        if not left and gone is None:
            gone = time.time() - t0
        time.sleep(0.2)
    left = _session_processes(proc.pid) + _runtime_processes(out)
    assert not left, f"processes of the killed run still alive 10 s later: {left}"
    assert gone is not None
    summary = out / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["complete"] is False
    assert _round(out) <= at_kill + 1, "rounds went on after the kill"
    assert (out / "fedtiny.lock").read_text().strip() == str(proc.pid)  # stale: nobody removed it
    return gone


@pytest.mark.slow
def test_sigkill_alone_then_of_the_group_then_resume(tmp_path: Path) -> None:
    """The default engine: SIGKILL of `fedtiny run` alone, then of a resumed run's whole process group; each
    time nothing is left 10 s later; a second run is refused while the first lives; the next `--resume` takes
    over the stale lock, and the last one ends with the rows of an uninterrupted (inline) run."""
    out = tmp_path / "killed"
    proc, _ = _start(out, ["run", QUICKSTART, "--out", str(out), "--set", "rounds=8"], until_round=2)
    with pytest.raises(FedTinyError, match=f"in use by a running fedtiny \\(pid {proc.pid},"):
        runlock.acquire(out, print)  # in-process: the rounds are fast (the CLI's refusal: test below)
    alone = _hard_kill(out, proc, group=False)

    proc, err = _start(out, ["run", "--resume", str(out)], until_round=_round(out) + 1)
    stale = [ln for ln in err.read_text().splitlines() if "stale lock" in ln]
    assert len(stale) == 1 and "removed" in stale[0], err.read_text()[-3000:]
    group = _hard_kill(out, proc, group=True)

    resumed = subprocess.run(
        _cli("run", "--resume", str(out)), capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["complete"] is True
    assert not (out / "fedtiny.lock").exists()
    ref = tmp_path / "uninterrupted"
    proc2 = subprocess.run(
        _cli("run", QUICKSTART, "--out", str(ref), "--set", "rounds=8", "--set", "runtime.engine=inline"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert _rows(out) == _rows(ref)
    print(f"all processes gone {alone:.1f} s after SIGKILL alone, {group:.1f} s after SIGKILL of the group")


@pytest.mark.slow
def test_sighup_stops_as_sigterm(tmp_path: Path) -> None:
    """A closed terminal: SIGHUP to the foreground process group, on the default engine."""
    out = tmp_path / "hup"
    rc, took, err, left = _run_and_signal(out, signal.SIGHUP, True)
    _check_interrupted(out, rc, took, err, left, 128 + signal.SIGHUP)
    assert "interrupted (SIGHUP)" in err
    assert not (out / "fedtiny.lock").exists()


def test_the_lock_refuses_a_second_run_and_takes_over_a_stale_one(tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from fedtiny import runlock; "
         "runlock.acquire(Path(sys.argv[1]), print); print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = subprocess.run(
            _cli("run", QUICKSTART, "--out", str(out)), capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            f"fedtiny: error: {out}: in use by a running fedtiny (pid {holder.pid}, {out / 'fedtiny.lock'}); "
            "wait for it to end or stop it"
        )
    finally:
        holder.kill()
        holder.wait()
    said: list[str] = []
    lock = runlock.acquire(out, said.append)
    assert said == [f"fedtiny: {out}: removed a stale lock (pid {holder.pid} is no longer running)"]
    assert (out / "fedtiny.lock").read_text().strip() == str(os.getpid())
    lock.release()
    assert not (out / "fedtiny.lock").exists()
    runlock.acquire(out, said.append).release()
    assert len(said) == 1  # a lock released by its owner is not stale


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["alone", "group"])
def test_sigkill_of_fedtiny_trial_leaves_no_child(tmp_path: Path, group: bool) -> None:
    """`fedtiny trial`'s children (serve and its SuperLink, SuperExec, ServerApp; virtual boards; gateways and
    their SuperNodes), all in sessions of their own, die with it."""
    from test_field_trial import _our_processes

    out = tmp_path / "trial"
    err = tmp_path / "trial.stderr"
    with err.open("w") as fh:
        proc = subprocess.Popen(
            _cli("trial", str(ROOT / "scenarios" / "field_trial.toml"), "--boards", "1", "--out", str(out),
                 "--set", "rounds=50"),
            stdout=fh, stderr=fh, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
    gw = out / "logs" / "gateway-1.log"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if gw.is_file() and "round 1 train" in gw.read_text(errors="replace"):
            break
        time.sleep(0.2)
    assert proc.poll() is None, err.read_text()[-3000:]
    before = _our_processes(str(tmp_path))
    t0 = time.time()
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()
    gone = None
    while time.time() - t0 < 10:
        if not _our_processes(str(tmp_path)) and gone is None:
            gone = time.time() - t0
        time.sleep(0.2)
    left = _our_processes(str(tmp_path))
    assert not left, f"processes of the killed trial still alive 10 s later: {left}"
    print(
        f"trial: {len(before)} processes, all gone {gone:.1f} s after SIGKILL ({'group' if group else 'alone'})"
    )
    assert (out / "fedtiny.lock").read_text().strip() == str(proc.pid)  # stale: taken over by the next trial
