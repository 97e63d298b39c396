"""Tiny exact classifiers for registry tests: each predicts the class whose brightness
centre is nearest an image's mean pixel, so every gate outcome is known in advance."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlpipe.dataset import ImageSplit

CLASSES = ["dark", "mid", "bright"]
PERFECT = [42.0, 127.0, 212.0]
WORSE = [42.0, 140.0, 212.0]  # ~10 of 180 wrong near the class borders: still above minimums
BROKEN = [42.0, 127.0, 127.0]  # never says "bright": worst-class recall 0, rejected


class Bands(nn.Module):
    """Raw pixels (B, 1, H, W) -> logits (B, K): minus the distance to each class centre."""

    centres: torch.Tensor

    def __init__(self, centres: list[float]) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.float().mean(dim=(1, 2, 3))  # (B,)
        return -(brightness[:, None] - self.centres).abs()  # (B, K)


def bands_split(per_class: int = 60) -> ImageSplit:
    levels = np.round(np.linspace(0, 84, per_class))
    values = np.concatenate([k * 85 + levels for k in range(len(CLASSES))])
    images = np.broadcast_to(values[:, None, None, None], (len(values), 1, 8, 8))
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    return ImageSplit(images=images.astype(np.uint8).copy(), labels=labels.astype(np.int64))
