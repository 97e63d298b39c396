"""Model registry: architecture name -> class; one architecture per file."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlpipe.models.cnn import CNN
from mlpipe.models.common import Normalize
from mlpipe.models.resnet import ResNet
from mlpipe.models.vit import ViT

ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": CNN, "resnet": ResNet, "vit": ViT}


class Classifier(nn.Module):
    """Raw images in (B, C, H, W, pixel values 0..255), logits out (B, num_classes)."""

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


def build_model(
    cfg: Any, in_channels: int, num_classes: int, mean: list[float], std: list[float]
) -> Classifier:
    """Build `cfg.arch` behind the normalisation layer."""
    backbone = ARCHITECTURES[cfg.arch](cfg, in_channels, num_classes)
    return Classifier(backbone, mean, std)
