"""The classifiers: one architecture per file, each registered with its config schema.

`build_model(cfg, ...)` builds `cfg.arch` behind the normalisation layer, so every model
takes raw pixels. `load_config` loads the `model` section of params.yaml into the schema
its `arch` names.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mlpipe.config import load_section
from mlpipe.models.common import Normalize
from mlpipe.models.registry import ARCHITECTURES, Architecture, register, schema_for

# imported for their @register side effect: the registry lists them from here on
from mlpipe.models import cnn, resnet, vit  # noqa: F401  isort: skip

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Classifier",
    "build_model",
    "load_config",
    "predict_logits",
    "register",
    "schema_for",
]


class Classifier(nn.Module):
    """Raw images in (B, C, H, W, pixel values 0..255), logits out (B, num_classes)."""

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone(self.normalize(x))
        return out


def build_model(
    cfg: Any, in_channels: int, num_classes: int, mean: list[float], std: list[float]
) -> Classifier:
    """Build `cfg.arch` behind the normalisation layer."""
    backbone = ARCHITECTURES[cfg.arch].module(cfg, in_channels, num_classes)
    return Classifier(backbone, mean, std)


# Values (images x channels x pixels) in one no-grad batch when its size is left to us: a
# layer's activations grow with them, so a batch of 96x96 RGB images holds about as much as
# one of 28x28 grey images 35 times longer. 2**21: 1,000 Fashion-MNIST images (the cap).
INFERENCE_VALUES = 2**21
INFERENCE_CAP = 1000


def inference_batch(image_shape: tuple[int, ...] | torch.Size) -> int:
    """Images per inference batch for images of `image_shape` (C, H, W): as many as make
    INFERENCE_VALUES, at most INFERENCE_CAP (1,000 at 28x28, 75 at 96x96x3, 13 at 224x224x3)."""
    values = max(1, math.prod(int(d) for d in image_shape))
    return max(1, min(INFERENCE_CAP, INFERENCE_VALUES // values))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> torch.Tensor:
    """Logits (N, num_classes) in fp32 on the CPU, in eval mode, `batch_size` at a time on
    `device` (default: the CPU) under `autocast` (default: none, full fp32)."""
    model.eval()
    out = []
    for chunk in torch.split(images, batch_size):
        with autocast():
            logits: torch.Tensor = model(chunk.to(device or torch.device("cpu")))
        out.append(logits.float().cpu())
    return torch.cat(out)


def load_config(params: dict[str, Any], where: str = "params.yaml") -> Any:
    """The `model` section of `params` as its architecture's config dataclass."""
    return load_section(params, "model", schema_for, where)
