"""Exponential moving average of a model's weights, updated after every optimiser step.

ema <- d * ema + (1 - d) * weights, with d = min(decay, (1 + n) / (10 + n)) after the n-th
update, so the random initial weights are forgotten early (as TF's ExponentialMovingAverage
with num_updates, or timm's ModelEma warm-up). Floating-point buffers (BatchNorm running
statistics) are averaged the same way; integer buffers (batch counters) are copied.

Kept instead of torch.optim.swa_utils.AveragedModel + get_ema_multi_avg_fn: that one has a
fixed decay (no warm-up) and rebuilds its parameter lists on every update; measured on
the CPU (one thread, 7 x 100 updates, medians) it took 4.8x the time per update for the
CNN and 2.7x for the ResNet (0.30 vs 0.06 ms, 3.1 vs 1.1 ms). Both use torch's fused
_foreach_lerp_.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay_at(decay: float, num_updates: int) -> float:
    """The decay used by update number `num_updates` (1-based)."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class ModelEma:
    """Shadow copy of `model`. Build it after `model` is on its device and memory format:
    it keeps references to `model`'s tensors."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        source, shadow = model.state_dict(), self.module.state_dict()
        floats = [k for k, v in source.items() if v.is_floating_point()]
        self._float_src = [source[k] for k in floats]
        self._float_ema = [shadow[k] for k in floats]
        self._other = [(shadow[k], v) for k, v in source.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = ema_decay_at(self.decay, self.num_updates)
        torch._foreach_lerp_(self._float_ema, self._float_src, 1.0 - d)
        for dst, src in self._other:
            dst.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])
