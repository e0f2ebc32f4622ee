"""How `fedtiny run` runs a scenario on Flower's supported simulation runtime: a private simulation SuperLink
driven by `flwr run` (:mod:`fedtiny.runtime.superlink`), the channel between the ServerApp and the driver
(:mod:`fedtiny.runtime.channel`), and the Ray worker environment (:mod:`fedtiny.runtime.ray_env`)."""
