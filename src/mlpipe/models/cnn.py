"""A small VGG-style CNN: the fast default for 28x28 greyscale images."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mlpipe.config import check
from mlpipe.models.common import check_stem_stride, conv_bn_relu, stem
from mlpipe.models.registry import register


@dataclass
class CNNConfig:
    arch: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    pool_size: int = 7  # feature grid side before the head (7 = no pooling at 28x28)
    hidden: int = 128
    dropout: float = 0.2
    stem_stride: int = 1  # 1: no stem (28-32 px); 2 for ~64 px; 4 for ~224 px

    def __post_init__(self) -> None:
        check_stem_stride(self.stem_stride)
        check(self.pool_size > 0, "pool_size", f"must be > 0, got {self.pool_size}")
        check(len(self.channels) >= 1, "channels", "needs at least one stage")
        check(all(c > 0 for c in self.channels), "channels", f"must be > 0, got {self.channels}")
        check(self.hidden > 0, "hidden", f"must be > 0, got {self.hidden}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register("cnn", CNNConfig)
class CNN(nn.Module):
    """Per stage: conv-bn-relu then 2x2 max-pool; then an adaptive average pool to a
    pool_size x pool_size grid and an MLP head.

    With stem_stride > 1 a stem (a stride-2 conv to channels[0], and a max-pool for 4)
    shrinks large images first. Works for any input size >= stem_stride * 2**len(channels)
    pixels a side.
    """

    def __init__(self, cfg: CNNConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        c_in = in_channels
        if cfg.stem_stride > 1:
            stages.append(stem(c_in, cfg.channels[0], cfg.stem_stride))
            c_in = cfg.channels[0]
        for c_out in cfg.channels:
            stages += [conv_bn_relu(c_in, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(cfg.pool_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(c_in * cfg.pool_size**2, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, num_classes),
        )
        self.num_features = c_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pool(self.features(x))  # (B, C_last, pool_size, pool_size)
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(x)  # (B, num_classes)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
