"""Rebuild the shipped reference int8 base models (fedtiny/model/reference/): one per distinct ModelSpec of the
ready scenarios (scenarios/*.toml on a reference task, no user model or data), trained and converted with
TensorFlow by fedtiny.model.build, with a meta (spec, accuracies, bytes, sha256).

    python scripts/build_reference_models.py            # rewrite the shipped models
    python scripts/build_reference_models.py --check    # rebuild into a temp dir, compare with the shipped ones

A rebuild on another CPU (or TensorFlow) may differ in its bytes: TensorFlow's CPU kernels differ between
machines. That is why the models are shipped; --check compares accuracies, and exits 1 if a rebuilt model's
int8 accuracy is more than --margin below the shipped one's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedtiny.model.build import PIPELINE_VERSION, REFERENCE_DIR, ModelSpec, build_entry, tensorflow_version
from fedtiny.plan import load_scenario
from fedtiny.plan.resolve import model_spec


def reference_specs(scenarios: Path = ROOT / "scenarios") -> dict[str, tuple[ModelSpec, list[str]]]:
    """name -> (spec, scenarios using it) for every ready scenario on a reference task."""
    out: dict[str, tuple[ModelSpec, list[str]]] = {}
    for f in sorted(scenarios.glob("*.toml")):
        raw = tomllib.loads(f.read_text())
        if {"tflite", "keras"} & set(raw.get("model", {})) or raw.get("data", {}).get("path"):
            continue  # a user's model or data (their files may not exist: do not load it)
        spec = model_spec(load_scenario(f))
        digest = hashlib.sha256(json.dumps([spec.fields(), PIPELINE_VERSION]).encode()).hexdigest()[:8]
        out.setdefault(f"{spec.task}-seed{spec.seed}-{digest}", (spec, []))[1].append(f.stem)
    return out


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def build(name: str, spec: ModelSpec, scenarios: list[str], into: Path) -> dict[str, object]:
    tflite, meta = build_entry(spec, log=lambda m: print(f"  {name}: {m}"))
    meta = {"name": name, "scenarios": scenarios, "pipeline": PIPELINE_VERSION, **meta}
    meta |= {"sha256": hashlib.sha256(tflite).hexdigest(), "tensorflow": tensorflow_version()}
    cpu = [ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")][:1]
    meta["built_on"] = f"{platform.system()} {platform.machine()} {''.join(cpu)}".strip()
    into.mkdir(parents=True, exist_ok=True)
    (into / f"{name}.tflite").write_bytes(tflite)
    # the same bytes as text: a Flower App package (`flwr run .`) carries no .tflite (fedtiny.model.build)
    copy = {"name": f"{name}.tflite", "sha256": hashlib.sha256(tflite).hexdigest(),
            "base64": base64.b64encode(tflite).decode()}  # fmt: skip
    (into / f"{name}.tflite.json").write_text(json.dumps(copy) + "\n")
    (into / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare")
    ap.add_argument("--only", default="", help="only the model used by this scenario (e.g. quickstart)")
    ap.add_argument("--margin", type=float, default=0.03, help="--check: allowed int8 accuracy drop")
    a = ap.parse_args()
    todo = {n: v for n, v in reference_specs().items() if not a.only or a.only in v[1]}
    if not todo:
        print(f"no reference model is used by scenario {a.only!r}", file=sys.stderr)
        return 2
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp) if a.check else REFERENCE_DIR
        for name, (spec, scenarios) in todo.items():
            meta = build(name, spec, scenarios, into)
            print(f"{name} ({', '.join(scenarios)}): int8 {meta['int8_accuracy']:.4f}, "
                  f"float {meta['float_accuracy']:.4f}, {meta['bytes']} bytes, {meta['build_seconds']} s")  # fmt: skip
            if a.check:
                ref = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
                same = "same bytes" if ref["sha256"] == meta["sha256"] else "different bytes"
                drop = ref["int8_accuracy"] - float(meta["int8_accuracy"])  # type: ignore[arg-type]
                bad += drop > a.margin
                print(
                    f"  shipped: int8 {ref['int8_accuracy']:.4f} ({same}; drop {drop:+.4f}, margin {a.margin})"
                )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
