"""Simulated gateway: a Flower ClientApp that trains all of its devices at once with the on-device spec."""
