"""The Ray worker environment under Flower's simulation runtime: TensorFlow blocked in every worker.

Flower builds the runtime env of its Ray workers itself (``{"env_vars": {"PYTHONPATH": ...}}``) and takes no
runtime-env setting; Ray calls the function named by ``RAY_RUNTIME_ENV_HOOK`` with it at ``ray.init``, which
is how fedtiny adds its ``worker_process_setup_hook``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping

#: the value of ``RAY_RUNTIME_ENV_HOOK`` that adds :func:`block_tensorflow` to every Ray worker
HOOK = "fedtiny.runtime.ray_env.add_setup_hook"
SETUP_HOOK = "fedtiny.runtime.ray_env.block_tensorflow"


def add_setup_hook(runtime_env: Mapping[str, object] | None) -> dict[str, object]:
    """Ray's runtime-env hook: the env Flower built, with fedtiny's worker setup hook added."""
    env = dict(runtime_env or {})
    env["worker_process_setup_hook"] = SETUP_HOOK
    given = env.get("env_vars") or {}
    env_vars: dict[object, object] = dict(given) if isinstance(given, Mapping) else {}
    env_vars.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env["env_vars"] = env_vars
    return env


def block_tensorflow() -> None:
    """Ray worker setup hook: gateways never need TensorFlow (saves ~450 MB and ~3 s per worker); Flower's
    "Manually terminating ClientAppActor" warning (one per gateway on every stop) is dropped."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    logging.getLogger("flwr").addFilter(lambda record: "Manually terminating" not in record.getMessage())


def set_hook_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """Name :data:`HOOK` in ``RAY_RUNTIME_ENV_HOOK`` unless the user set one of their own."""
    environ.setdefault("RAY_RUNTIME_ENV_HOOK", HOOK)
