"""Pieces every architecture shares."""

from __future__ import annotations

import torch
from torch import nn

from mlpipe.config import check


class Normalize(nn.Module):
    """Raw pixels (0..255) -> standardised input, with train-set statistics as buffers.

    Living inside the model, the statistics travel with every checkpoint and export,
    so the model takes raw images.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in 0..255
        return (x.float() / 255.0 - self.mean) / self.std


STEM_STRIDES = (1, 2, 4)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def stem(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The first layers, shrinking the grid by `stride` for large images: 1 keeps it (28 to
    32 pixels), 2 is a stride-2 conv (about 64 pixels), 4 adds a stride-2 3x3 max-pool, as
    ResNet's ImageNet stem does (about 224 pixels -> a 56x56 grid)."""
    layers = conv_bn_relu(c_in, c_out, 1 if stride == 1 else 2)
    if stride == 4:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return layers


def check_stem_stride(stride: int) -> None:
    allowed = ", ".join(map(str, STEM_STRIDES))
    check(stride in STEM_STRIDES, "stem_stride", f"must be one of {allowed}, got {stride}")


class TemperatureScaled(nn.Module):
    """logits / T: the temperature fitted on the validation split (temperature scaling,
    Guo et al. 2017). Same argmax, calibrated softmax; T travels as a buffer in exports."""

    temperature: torch.Tensor

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x) / self.temperature
        return out
