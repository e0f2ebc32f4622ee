"""Digests of the reference scenarios' results, so that a redesign can show it changed no result (issue 21).

Runs five reference scenarios through the CLI, as a user would (the scenarios' fixed gateway sizes on the inline engine: the simulation
runtime gives the same bits, tests/test_same_bits.py), and hashes what they produce:

- ``quickstart``: scenarios/quickstart.toml, 7 rounds (past its drift at round 6);
- ``fleet_10k``: scenarios/vibration_fleet_10k.toml, 31 rounds (past its drift at round 30);
- ``user_data``: a shipped reference model with recorded-style npz data (device ids, times), 4 rounds, a
  generic drift knob;
- ``field_trial``: scenarios/field_trial.toml with 2 virtual boards, 2 rounds.

Hashed: every column of ``rounds.csv`` but the wall time, ``model_int8.tflite`` and ``base_int8.tflite``, the
checkpoints (arrays; metadata without wall times), the device logs (``device_rounds/``, ``devices.jsonl``) and
the fleet's pools (``fleet/*.npy``). ``--write`` records them in tests/golden/reference_results.json;
without it the run is compared with that file and every difference is listed (exit 1).

    python scripts/reference_results.py [--write] [--only quickstart,user_data] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "reference_results.json"
#: the inline engine: the simulation runtime gives the same bits (tests/test_same_bits.py), without Ray's start-up
INLINE = "runtime.engine=inline"
WALL_KEYS = {"wall_s", "started", "finished", "elapsed_s", "time"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _npz_digest(path: Path) -> str:
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as z:
        for k in sorted(z.files):
            a = z[k]
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def _strip_wall(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_wall(v) for k, v in obj.items() if k not in WALL_KEYS}
    if isinstance(obj, list):
        return [_strip_wall(v) for v in obj]
    return obj


def _csv_digest(path: Path) -> str:
    with path.open(newline="") as fh:
        rows = [{k: v for k, v in r.items() if k not in WALL_KEYS} for r in csv.DictReader(fh)]
    out = io.StringIO()
    json.dump(rows, out, sort_keys=True)
    return _sha(out.getvalue().encode())


def digest_run(out: Path) -> dict[str, str]:
    """Name → digest of every result file of one run directory that must not change."""
    d: dict[str, str] = {}
    if (out / "rounds.csv").exists():
        d["rounds.csv"] = _csv_digest(out / "rounds.csv")
    for name in ("model_int8.tflite", "base_int8.tflite"):
        if (out / name).exists():
            d[name] = _sha((out / name).read_bytes())
    for sub in ("checkpoint", "device_rounds", "fleet"):
        for p in sorted((out / sub).glob("*")) if (out / sub).is_dir() else []:
            key = f"{sub}/{p.name}"
            if p.suffix == ".npz":
                d[key] = _npz_digest(p)
            elif p.suffix == ".npy":
                a = np.load(p, allow_pickle=False)
                d[key] = _sha(f"{a.dtype.str}:{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
            elif p.suffix == ".json":
                d[key] = _sha(json.dumps(_strip_wall(json.loads(p.read_text())), sort_keys=True).encode())
    for p in sorted(out.glob("devices*.jsonl")):
        d[p.name] = _sha(p.read_bytes())
    return d


def _fedtiny(*args: str, cwd: Path = ROOT) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fedtiny.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"fedtiny {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")  # fmt: skip


def _sets(*kv: str) -> list[str]:
    return [a for o in kv for a in ("--set", o)]


def run_quickstart(work: Path) -> Path:
    out = work / "quickstart"
    _fedtiny("run", str(ROOT / "scenarios/quickstart.toml"), "--out", str(out), *_sets("rounds=7", INLINE))
    return out


def run_fleet_10k(work: Path) -> Path:
    out = work / "fleet_10k"
    _fedtiny(
        "run",
        str(ROOT / "scenarios/vibration_fleet_10k.toml"),
        "--out",
        str(out),
        *_sets("rounds=31", INLINE),
    )
    return out


def _user_data(path: Path, dim: int, classes: int) -> None:
    """Recorded-style data made from integers only (the same bytes on every machine): 6 devices, 50 examples
    each, a class pattern plus a per-device offset plus a slow drift over time."""
    rng = np.random.default_rng(3)
    proto = rng.integers(-40, 41, size=(classes, dim)).astype(np.float32) / 16
    xs, ys, ds, ts = [], [], [], []
    for dv in range(6):
        off = rng.integers(-8, 9, size=dim).astype(np.float32) / 16
        y = rng.integers(0, classes, size=50)
        noise = rng.integers(-16, 17, size=(50, dim)).astype(np.float32) / 32
        drift = (np.arange(50, dtype=np.float32) / 80)[:, None]
        xs.append(proto[y] + off + noise + drift)
        ys.append(y)
        ds.append(np.full(50, 10 + dv))
        ts.append(np.arange(50) + 100 * dv)
    np.savez(path, x=np.concatenate(xs), y=np.concatenate(ys), device=np.concatenate(ds),
             time=np.concatenate(ts))  # fmt: skip


def run_user_data(work: Path) -> Path:
    from fedtiny.model.user import load_tflite

    model = next((ROOT / "fedtiny/model/reference").glob("vibration-seed7-*.tflite"))
    um = load_tflite(model)
    dim = int(np.prod(um.io.input_shape[1:]))
    data = work / "user.npz"
    _user_data(data, dim, um.num_classes)
    scen = work / "user.toml"
    scen.write_text(
        f'name = "user_data"\nseed = 3\nrounds = 4\n[model]\ntflite = "{model}"\n[data]\npath = "{data}"\n'
        f"[fleet]\ndevices_per_gateway = 3\n[train]\nlr = 0.05\n[strategy]\nfraction = 0.5\n"
        f'[runtime]\nengine = "inline"\n[[drift]]\nat = 3\nfraction = 0.5\ngroup = "quiet"\ncondition = {{ gain = 0.3, snr_db = 5.0 }}\n'
    )
    out = work / "user_data"
    _fedtiny("run", str(scen), "--out", str(out))
    return out


def run_field_trial(work: Path) -> Path:
    out = work / "field_trial"
    _fedtiny("trial", str(ROOT / "scenarios/field_trial.toml"), "--boards", "2", "--out", str(out),
             *_sets("rounds=2"))  # fmt: skip
    return out


SCENARIOS: dict[str, Callable[[Path], Path]] = {
    "quickstart": run_quickstart,
    "fleet_10k": run_fleet_10k,
    "user_data": run_user_data,
    "field_trial": run_field_trial,
}


def compute(names: list[str], work: Path) -> dict[str, dict[str, str]]:
    out = {}
    for n in names:
        print(f"{n} ...", flush=True)
        out[n] = digest_run(SCENARIOS[n](work))
    return out


def differences(want: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> list[str]:
    diffs = []
    for n, files in got.items():
        ref = want.get(n, {})
        for f in sorted(set(ref) | set(files)):
            if ref.get(f) != files.get(f):
                diffs.append(f"{n}: {f}: recorded {ref.get(f)}, now {files.get(f)}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="record the digests (tests/golden/…)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep it")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
        got = compute(names, a.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            got = compute(names, Path(tmp))
    if a.write:
        old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({**old, **got}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({sum(len(v) for v in got.values())} digests)")
        return 0
    diffs = differences(json.loads(GOLDEN.read_text()), got)
    for d in diffs:
        print(d)
    print(f"{len(diffs)} difference(s) in {sum(len(v) for v in got.values())} digests")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
