"""The reference scenarios' results are the recorded ones, byte for byte (issue 21: a redesign changes no result).

``scripts/reference_results.py`` runs the quickstart (7 rounds, past its drift), the 10k
fleet (31 rounds, past its drift), a user's model and recorded-style data with a generic drift knob, and a field
trial with two virtual boards, through the CLI, and hashes rounds.csv (but wall times), the final and base
models, the checkpoints, the device logs and the fleet pools. A change that means to change results records
new digests with ``python scripts/reference_results.py --write`` and says why in its commit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reference_scenarios_give_the_recorded_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reference_results.py"), "--keep", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 difference(s)" in proc.stdout
