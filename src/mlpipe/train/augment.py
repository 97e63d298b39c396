"""Random crop (after zero padding) and horizontal flip of whole batches, on the device.

The random parameters are drawn once per epoch for every image from the batch-order
generator: deterministic per seed, identical on every rank under DDP, and no host work
or per-sample Python loop per step. One `gather` applies crop and flip together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mlpipe.train.config import AugmentConfig


@dataclass
class AugmentParams:
    padding: int
    shifts: torch.Tensor | None  # (N, 2) int64 crop offsets (dy, dx) in [0, 2 * padding]
    flips: torch.Tensor | None  # (N,) bool: mirror left-right

    def to(self, device: torch.device) -> AugmentParams:
        return AugmentParams(
            self.padding,
            None if self.shifts is None else self.shifts.to(device),
            None if self.flips is None else self.flips.to(device),
        )

    def apply(self, images: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Augment `images`, the batch at positions [start, stop) of the epoch's order."""
        shifts = None if self.shifts is None else self.shifts[start:stop]
        flips = None if self.flips is None else self.flips[start:stop]
        return crop_flip(images, shifts, flips, self.padding)


def is_enabled(cfg: AugmentConfig) -> bool:
    return cfg.crop_padding > 0 or cfg.hflip


def draw_params(generator: torch.Generator, n: int, cfg: AugmentConfig) -> AugmentParams:
    """Parameters for `n` images (on the CPU); draws nothing for what is switched off."""
    p = cfg.crop_padding
    shifts = torch.randint(0, 2 * p + 1, (n, 2), generator=generator) if p > 0 else None
    flips = torch.randint(0, 2, (n,), generator=generator).bool() if cfg.hflip else None
    return AugmentParams(p, shifts, flips)


def crop_flip(
    images: torch.Tensor,
    shifts: torch.Tensor | None,
    flips: torch.Tensor | None,
    padding: int,
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), same dtype: crop of the zero-padded image at `shifts`,
    mirrored where `flips`. Output pixel (i, j) reads padded pixel (i + dy, j' + dx),
    with j' = W - 1 - j when flipped.
    """
    b, c, h, w = images.shape
    rows = torch.arange(h, device=images.device).expand(b, h)  # (B, H)
    cols = torch.arange(w, device=images.device).expand(b, w)  # (B, W)
    if flips is not None:
        cols = torch.where(flips[:, None], w - 1 - cols, cols)
    if shifts is not None and padding > 0:
        rows = rows + shifts[:, :1]
        cols = cols + shifts[:, 1:]
        images = F.pad(images, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    width = images.shape[-1]
    index = (rows[:, :, None] * width + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)
    out = images.flatten(2).gather(2, index.expand(b, c, h * w))  # (B, C, H*W)
    return out.view(b, c, h, w)
