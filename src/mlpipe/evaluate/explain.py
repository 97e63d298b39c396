"""Attribution maps with Captum's Integrated Gradients (Sundararajan et al. 2017).

Why IG over plain saliency (|d logit / d pixel|): IG satisfies *completeness*: the
attributions of an image sum to F(x) - F(baseline) for the explained class, so a map
accounts for the whole logit rather than its local slope, and it does not saturate where
the gradient is flat (ReLU/softmax plateaus). Baseline: the black image (raw pixels 0,
the models normalise inside), the natural "no evidence" input for these images. It works
unchanged for every architecture (CNN, ResNet, ViT): it needs only gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlpipe.models.vit import Attention, ViT


@dataclass
class Attributions:
    indices: list[int]  # which test images
    attributions: np.ndarray  # (N, C, H, W), in logit units
    delta: np.ndarray  # (N,) completeness error: sum(attr) - (F(x) - F(baseline))
    targets: np.ndarray  # (N,) the explained class (the predicted one)


def sample_per_class(labels: np.ndarray, n_classes: int, per_class: int = 1) -> list[int]:
    """A fixed sample: the first `per_class` test images of each class, in class order."""
    out: list[int] = []
    for c in range(n_classes):
        out.extend(int(i) for i in np.flatnonzero(labels == c)[:per_class])
    return out


def integrated_gradients(
    model: nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    steps: int = 32,
    indices: list[int] | None = None,
) -> Attributions:
    """IG of `targets`' logits w.r.t. raw pixels, from the black image, `steps` steps."""
    from captum.attr import IntegratedGradients

    model = model.eval()
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    target = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    ig = IntegratedGradients(model)
    attr, delta = ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=steps,
        internal_batch_size=max(steps, 1) * 4,
        return_convergence_delta=True,
    )
    return Attributions(
        indices=list(indices if indices is not None else range(len(x))),
        attributions=attr.detach().numpy(),
        delta=delta.detach().numpy(),
        targets=target.numpy(),
    )


def attention_weights(attention: Attention, x: torch.Tensor) -> torch.Tensor:
    """The softmax weights an `mlpipe.models.vit.Attention` layer uses on its input x (B, N, D),
    per head: (B, H, N, N). Recomputed from its q and k, as scaled_dot_product_attention does
    not return them."""
    b, n, d = x.shape
    heads = attention.heads
    qkv = attention.qkv(x).view(b, n, 3, heads, d // heads)  # (B, N, 3, H, D/H)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D/H)
    scores = q @ k.transpose(-2, -1) * (d // heads) ** -0.5  # (B, H, N, N)
    return torch.softmax(scores, dim=-1)


def attention_rollout(model: nn.Module, images: np.ndarray) -> np.ndarray | None:
    """Attention rollout (Abnar & Zuidema 2020) for a ViT: how much each patch flows into the
    pooled token through all blocks, each block's attention mixed half and half with the
    identity for its residual path. (N, S/p, S/p), each map scaled to a maximum of 1; None
    for a model without attention layers."""
    vit = next((m for m in model.modules() if isinstance(m, ViT)), None)
    if vit is None:
        return None
    weights: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(
            lambda mod, inputs, _: weights.append(attention_weights(mod, inputs[0]).mean(dim=1))
        )
        for m in vit.modules()
        if isinstance(m, Attention)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(np.asarray(images), dtype=torch.float32))
    finally:
        for handle in handles:
            handle.remove()
    n = weights[0].shape[-1]
    eye = torch.eye(n)
    rollout = eye.expand_as(weights[0])
    for a in weights:
        mixed = 0.5 * a + 0.5 * eye
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout  # (B, N, N)
    prefix = vit.num_prefix
    # cls pooling reads the class token's row; mean pooling averages the patch tokens' rows
    flow = rollout[:, 0, prefix:] if prefix else rollout.mean(dim=1)  # (B, patches)
    side = round(flow.shape[-1] ** 0.5)
    flow = flow / flow.amax(dim=-1, keepdim=True)
    return flow.reshape(-1, side, side).numpy()
