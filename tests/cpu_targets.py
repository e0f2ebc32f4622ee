"""Other machines played on this one, for the same-bits tests (issue 18): environments that make numba compile
for another CPU target and numpy and OpenBLAS take the code paths another CPU would take.

- ``NUMBA_CPU_NAME=generic``: numba compiles for a plain x86-64 / AArch64 (no AVX, no FMA), into its own cache
  directory (numba's on-disk cache is keyed by CPU name, a separate directory keeps the test's compile apart).
- ``NPY_DISABLE_CPU_FEATURES``: numpy's SIMD dispatch without its AVX-512 (and, in the baseline env, AVX2)
  paths, among the targets this CPU has; on ARM64 its optional NEON / SVE extensions.
- ``OPENBLAS_CORETYPE``: another OpenBLAS kernel (x86-64 only).
"""

from __future__ import annotations

import platform
from pathlib import Path


def _dispatch_present() -> list[str]:
    import numpy as np  # noqa: F401  (the module below is numpy's)
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]


def other_cpu_envs(tmp: Path) -> list[dict[str, str]]:
    present = _dispatch_present()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    top = [t for t in present if t.startswith(("X86_V4", "AVX512"))] if x86 else present[-1:]
    envs = [
        {  # the plainest machine: no SIMD dispatch above numpy's baseline, numba for a generic CPU, 1 thread
            "NUMBA_CPU_NAME": "generic",
            "NUMBA_CACHE_DIR": str(tmp / "numba-generic"),
            "NUMBA_NUM_THREADS": "1",
            "NPY_DISABLE_CPU_FEATURES": " ".join(present),
        },
        {  # an AVX2 machine without AVX-512, two threads
            "NUMBA_CPU_NAME": "haswell" if x86 else "generic",
            "NUMBA_CACHE_DIR": str(tmp / "numba-haswell"),
            "NUMBA_NUM_THREADS": "2",
            "NPY_DISABLE_CPU_FEATURES": " ".join(top),
        },
    ]
    if x86:
        envs[1]["OPENBLAS_CORETYPE"] = "Haswell"
        envs.append({"OPENBLAS_CORETYPE": "Sandybridge"})
    return [{k: v for k, v in e.items() if v != ""} for e in envs]
