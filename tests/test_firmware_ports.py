"""The ports' fixed flash layouts agree with the core's configuration (fedtiny_config.h)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"


def _flash_size(tmp_path: Path) -> int:
    """FT_FLASH_SIZE as the C compiler computes it from the default configuration."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc) to evaluate fedtiny_config.h")
    src = tmp_path / "size.c"
    src.write_text(
        '#include "fedtiny_config.h"\n#include <stdio.h>\n'
        'int main(void) { printf("%lu\\n", (unsigned long)FT_FLASH_SIZE); return 0; }\n'
    )
    exe = tmp_path / "size"
    subprocess.run([cc, f"-I{FW / 'core'}", str(src), "-o", str(exe)], check=True)
    return int(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


def test_esp_idf_partition_holds_the_whole_fedtiny_flash_region(tmp_path: Path) -> None:
    rows = [
        [c.strip() for c in row]
        for row in csv.reader((FW / "ports" / "esp-idf" / "partitions.csv").read_text().splitlines())
        if row and not row[0].lstrip().startswith("#")
    ]
    part = next(r for r in rows if r[0] == "fedtiny")
    # port_esp.c refuses to boot on a partition smaller than FT_FLASH_SIZE: keep the table in step
    assert int(part[4], 0) >= _flash_size(tmp_path)
