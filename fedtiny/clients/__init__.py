"""Client side of fedtiny: simulated gateway ClientApp, real-board gateway, virtual board."""
