"""A small ResNet (He et al., 2016) for 28x28 images: the high-accuracy profile.

A 3x3 stem without down-sampling for small images (stem_stride 2 or 4 for large ones),
stages of standard BasicBlocks whose first block may halve the grid, global average
pooling and a linear head. Works for any input size; at 28x28 with strides [1, 2, 2] the
grid ends at 7x7, at 224x224 with stem_stride 4 at 14x14.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mlpipe.config import check
from mlpipe.models.common import check_stem_stride, stem
from mlpipe.models.registry import register


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); 1x1 projection when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        out: torch.Tensor = self.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        out = self.relu(out + self.shortcut(x))
        return out


@dataclass
class ResNetConfig:
    arch: str = "resnet"
    stem_channels: int = 64
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per stage
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])  # first block of each stage
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2])  # BasicBlocks per stage
    dropout: float = 0.0  # before the linear head
    stem_stride: int = 1  # 1 for 28-32 px; 2 for ~64 px; 4 (conv + max-pool) for ~224 px

    def __post_init__(self) -> None:
        check_stem_stride(self.stem_stride)
        check(self.stem_channels > 0, "stem_channels", f"must be > 0, got {self.stem_channels}")
        check(len(self.channels) >= 1, "channels", "needs at least one stage")
        check(all(c > 0 for c in self.channels), "channels", f"must be > 0, got {self.channels}")
        for key, values in (("strides", self.strides), ("blocks", self.blocks)):
            check(
                len(values) == len(self.channels),
                key,
                f"needs one value per stage ({len(self.channels)}), got {values}",
            )
        check(all(s in (1, 2) for s in self.strides), "strides", f"must be 1 or 2: {self.strides}")
        check(all(b > 0 for b in self.blocks), "blocks", f"must be > 0, got {self.blocks}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register("resnet", ResNetConfig)
class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = stem(in_channels, cfg.stem_channels, cfg.stem_stride)
        blocks: list[nn.Module] = []
        c_in = cfg.stem_channels
        for c_out, stride, count in zip(cfg.channels, cfg.strides, cfg.blocks, strict=True):
            for i in range(count):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c_in, num_classes)
        self.num_features = c_in
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stages(self.stem(x))  # (B, C_last, H / prod(s), W / prod(s))
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.pool(x)  # (B, C_last, 1, 1)
        out: torch.Tensor = self.head(self.head_drop(pooled.flatten(1)))  # (B, num_classes)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
