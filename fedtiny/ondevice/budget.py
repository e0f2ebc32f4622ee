"""RAM and compute accounting of on-device head training, per device (the board's side of the bill)."""

from __future__ import annotations

from dataclasses import dataclass

from fedtiny.ondevice.train import TrainConfig


@dataclass(frozen=True)
class DeviceBudget:
    """Bytes of RAM and multiply-accumulates a board spends on last-layer learning."""

    cache_bytes: int
    head_int8_bytes: int
    train_bytes: int  # float head, gradients, optimizer state, one batch of activations
    train_macs: int  # per training call (all epochs)
    infer_macs: int  # per int8 head inference (one sample)

    @property
    def ram_bytes(self) -> int:
        return self.cache_bytes + self.head_int8_bytes + self.train_bytes


def device_budget(
    num_classes: int, dim: int, cache_capacity: int, samples: int, cfg: TrainConfig
) -> DeviceBudget:
    """Exact buffer sizes of the reference implementation (docs/ondevice.md, firmware/core)."""
    c, d, b = num_classes, dim, cfg.batch_size
    head_f32 = 4 * c * (d + 1)
    buffers = head_f32  # float head being trained
    buffers += head_f32  # gradient
    if cfg.momentum:
        buffers += head_f32  # velocity
    if cfg.prox_mu:
        buffers += head_f32  # anchor (the round's starting head)
    buffers += 4 * b * (d + c)  # one batch: dequantized features and logits/probabilities
    steps_per_epoch = -(-min(samples, cache_capacity) // b)
    n = min(samples, cache_capacity)
    # forward (n*c*d) + weight gradient (n*c*d) + update (c*d per step)
    train_macs = cfg.epochs * (2 * n * c * d + steps_per_epoch * c * (d + 1))
    return DeviceBudget(
        cache_bytes=cache_capacity * (d + 1) + 8,
        head_int8_bytes=c * d + 8 * c,
        train_bytes=buffers,
        train_macs=train_macs,
        infer_macs=c * d,
    )
