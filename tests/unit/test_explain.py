"""Integrated Gradients on every architecture: shape and completeness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlpipe.evaluate.explain import (
    attention_rollout,
    attention_weights,
    integrated_gradients,
    sample_per_class,
)
from mlpipe.evaluate.plots import save_attribution_grid
from mlpipe.models import build_model
from mlpipe.models import load_config as load_model_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["cnn", "resnet", "vit"])
def test_attributions_have_the_image_shape_and_sum_to_the_logit_difference(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(load_model_config({"model": {"arch": arch}}), 1, 4, [0.3], [0.2]).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28)).astype(np.uint8)
    targets = np.array([1, 3])
    out = integrated_gradients(model, images, targets, steps=64)
    assert out.attributions.shape == images.shape
    # completeness: sum of attributions = F(x) - F(black image) for the explained class
    with torch.no_grad():
        x = torch.from_numpy(images).float()
        gap = (model(x) - model(torch.zeros_like(x)))[torch.arange(2), torch.from_numpy(targets)]
    sums = out.attributions.reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(sums, gap.numpy(), rtol=0.05, atol=0.05 * float(gap.abs().max()))
    assert np.abs(out.delta).max() <= 0.05 * float(gap.abs().max()) + 1e-3


def test_fixed_sample_is_the_first_images_of_each_class(tmp_path) -> None:
    labels = np.array([2, 0, 1, 0, 2, 1])
    assert sample_per_class(labels, 3) == [1, 2, 0]
    assert sample_per_class(labels, 4, per_class=2) == [1, 3, 2, 5, 0, 4]  # class 3: none
    images = np.zeros((3, 1, 8, 8), np.uint8)
    attr = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    path = tmp_path / "ig.png"
    save_attribution_grid(images, attr, labels[:3], labels[:3], ["a", "b", "c"], path, "IG")
    assert path.read_bytes()[:4] == b"\x89PNG"


def vit(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = load_model_config({"model": {"arch": "vit", "depth": 2, "dim": 32, **overrides}})
    return build_model(cfg, 1, 4, [0.3], [0.2]).eval()


def test_attention_weights_are_the_ones_the_layer_uses() -> None:
    from mlpipe.models.vit import Attention

    layer = next(m for m in vit().modules() if isinstance(m, Attention))
    x = torch.randn(2, 50, 32)
    weights = attention_weights(layer, x)  # (B, H, N, N)
    v = layer.qkv(x).view(2, 50, 3, layer.heads, 8).permute(2, 0, 3, 1, 4)[2]
    rebuilt = layer.proj((weights @ v).transpose(1, 2).reshape(2, 50, 32))
    torch.testing.assert_close(rebuilt, layer(x), rtol=1e-4, atol=1e-5)


def scale_qk(model: torch.nn.Module, factor: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "qkv"):
                m.qkv.weight.mul_(factor)
                m.qkv.bias.mul_(factor)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_rollout_follows_the_attention(pool: str) -> None:
    model = vit(pool=pool)
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28)).astype(np.uint8)
    scale_qk(model, 30.0)  # sharp attention: some patches carry far more than others
    maps = attention_rollout(model, images)
    assert maps is not None and maps.shape == (3, 7, 7)
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    assert maps.std() > 0.05
    scale_qk(model, 0.0)  # q = k = 0: every token attends to all alike, no patch stands out
    flat = attention_rollout(model, images)
    assert flat is not None
    np.testing.assert_allclose(flat, 1.0, rtol=1e-5)


def test_rollout_is_for_vits_only() -> None:
    cnn = build_model(load_model_config({"model": {"arch": "cnn"}}), 1, 4, [0.3], [0.2])
    assert attention_rollout(cnn, np.zeros((1, 1, 28, 28), np.uint8)) is None
