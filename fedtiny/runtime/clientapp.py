"""The ClientApp of fedtiny's Flower App (``[tool.flwr.app.components]``): the simulated gateway
(``fedtiny.clients.simulated.app``), loaded so that TensorFlow stays out of the Ray workers under `flwr run`.

Flower's simulation process loads the ClientApp before it starts Ray; naming fedtiny's runtime-env hook in
``RAY_RUNTIME_ENV_HOOK`` here means a Flower user's ``flwr run .`` gets the worker setup hook without setting
anything (a hook of the user's own is left alone), and :mod:`fedtiny.runtime.flower_poll` shortens the
engine's wait for new messages. A composition root like :mod:`fedtiny.runner`: the one
other place in fedtiny/ that loads a ClientApp from fedtiny/clients/.
"""

from __future__ import annotations

from fedtiny.runtime import flower_poll
from fedtiny.runtime.ray_env import set_hook_env

set_hook_env()
flower_poll.install()  # Flower's engine starts after loading this: it looks for messages every 5 ms

from fedtiny.clients.simulated.app import app  # noqa: E402  (after the hook is named: Ray starts right after)

__all__ = ["app"]
