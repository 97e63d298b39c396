"""Every architecture in the registry, built as the pipeline builds it (timm-style checks)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo  # the first optimiser imports it (~2 s): pay that at collection
from torch.nn import functional as F

from mlpipe.errors import ConfigError
from mlpipe.models import (
    ARCHITECTURES,
    INFERENCE_VALUES,
    Classifier,
    build_model,
    inference_batch,
)
from mlpipe.models import load_config as load_model_config
from mlpipe.models.checkpoint import load_checkpoint, save_checkpoint
from mlpipe.models.common import Normalize
from mlpipe.models.resnet import ResNetConfig
from mlpipe.models.vit import Attention, ViTConfig

NUM_CLASSES = 5
CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"
# every architecture with its defaults, plus the variants that change the graph
VARIANTS: dict[str, dict[str, Any]] = {arch: {} for arch in ARCHITECTURES} | {
    "vit-mean": {"arch": "vit", "pool": "mean"},
}
ARCHS = sorted(VARIANTS)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(arch: str, in_channels: int, **overrides: Any) -> Classifier:
    section = {"arch": arch} | VARIANTS.get(arch, {}) | overrides
    cfg = load_model_config({"model": section})
    mean, std = [0.3] * in_channels, [0.2] * in_channels
    torch.manual_seed(0)
    return build_model(cfg, in_channels, NUM_CLASSES, mean, std)


def raw_images(batch: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, 28, 28), generator=generator, dtype=torch.uint8)


def test_registry_is_not_empty():
    assert {"cnn", "resnet", "vit"} <= set(ARCHITECTURES)


def test_every_architecture_has_a_config_schema_and_a_conf_option():
    # one table: each architecture registered itself with its schema (models/registry.py)
    assert {p.stem for p in CONF_MODEL.glob("*.yaml")} == set(ARCHITECTURES)
    for arch, entry in ARCHITECTURES.items():
        assert (CONF_MODEL / f"{arch}.yaml").is_file(), f"conf/model/{arch}.yaml missing"
        assert entry.config().arch == arch


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape_and_finite(arch, in_channels):
    model = make_model(arch, in_channels).eval()
    with torch.no_grad():
        logits = model(raw_images(4, in_channels))
    assert logits.shape == (4, NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_finite_gradient(arch):
    model = make_model(arch, 1).train()
    labels = torch.arange(4) % NUM_CLASSES
    loss = torch.nn.functional.cross_entropy(model(raw_images(4, 1)), labels)
    loss.backward()
    params = list(model.named_parameters())
    assert params
    for name, param in params:
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for _, p in params)


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_in_eval_mode(arch):
    model = make_model(arch, 1).eval()
    x = raw_images(3, 1)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_is_head_of_features_of_normalized(arch):
    model = make_model(arch, 3).eval()
    x = raw_images(2, 3)
    with torch.no_grad():
        composed = model.backbone.forward_head(model.backbone.forward_features(model.normalize(x)))
        direct = model(x)
    assert torch.allclose(direct, composed)
    # the normalisation is really applied: skipping it changes the output
    with torch.no_grad():
        unnormalized = model.backbone(x.float())
    assert not torch.allclose(direct, unnormalized)


def test_normalize_standardises_raw_pixels():
    mean, std = [0.5, 0.25, 0.0], [0.25, 0.5, 2.0]
    layer = Normalize(mean, std)
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = layer(x)
    assert out.shape == (1, 3, 1, 3)
    assert out.dtype == torch.float32
    pixels = torch.tensor([0.0, 0.2, 1.0])
    for c in range(3):
        expected = (pixels - mean[c]) / std[c]
        assert torch.allclose(out[0, c, 0], expected), c
    assert torch.allclose(out[0, 0, 0], torch.tensor([-2.0, -1.2, 2.0]))


def test_normalize_zero_mean_unit_std_on_matching_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (64, 1, 8, 8), generator=generator, dtype=torch.uint8)
    scaled = x.double() / 255.0
    layer = Normalize([scaled.mean().item()], [scaled.std(unbiased=False).item()])
    out = layer(x)
    assert abs(out.mean().item()) < 1e-5
    assert abs(out.std(unbiased=False).item() - 1.0) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_normalisation_statistics_are_buffers(arch):
    model = make_model(arch, 3)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor([0.3] * 3))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor([0.2] * 3))
    assert "normalize.mean" not in dict(model.named_parameters())


@pytest.mark.parametrize(
    ("arch", "overrides", "size"),
    [
        ("vit", {"image_size": 32, "patch_size": 8}, 32),
        ("resnet", {"channels": [8, 16], "strides": [2, 2], "blocks": [1, 1]}, 20),
        ("cnn", {}, 32),
    ],
)
def test_other_image_sizes(arch, overrides, size):
    model = make_model(arch, 1, **overrides).eval()
    x = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8)
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES)


# each architecture at 28, 64 and 224 pixels with the settings the README gives per size
REAL_SIZES: dict[int, dict[str, dict[str, Any]]] = {
    28: {"cnn": {}, "resnet": {}, "vit": {"image_size": 28, "patch_size": 4}},
    64: {
        "cnn": {"stem_stride": 2},
        "resnet": {"stem_stride": 2},
        "vit": {"image_size": 64, "patch_size": 8},
    },
    224: {
        "cnn": {"stem_stride": 4},
        "resnet": {"stem_stride": 4},
        "vit": {"image_size": 224, "patch_size": 16},
    },
}
SMALL = {
    "cnn": {"channels": [8, 16], "hidden": 16},
    "vit": {"dim": 32, "depth": 1, "heads": 2},
    "resnet": {"stem_channels": 8, "channels": [8, 16, 16], "blocks": [1, 1, 1]},
}


def flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("size", sorted(REAL_SIZES))
def test_each_architecture_at_real_sizes_and_rgb(arch, size):
    """28, 64 and 224 pixels with 3 channels: logits of the right shape; at 224 the stem
    (the larger patches for the ViT) cuts the work per image at least 4x against the
    28-pixel settings at the same size."""
    model = make_model(arch, 3, **SMALL[arch], **REAL_SIZES[size][arch]).eval()
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    if size == 224:
        plain = REAL_SIZES[28][arch] | ({"image_size": 224} if arch == "vit" else {})
        full = make_model(arch, 3, **SMALL[arch], **plain).eval()
        assert flops(full, x) > 4 * flops(model, x)


def test_stems_shrink_the_grid_by_their_stride():
    for stride, side in ((1, 28), (2, 14), (4, 7)):
        model = make_model("resnet", 3, **SMALL["resnet"], stem_stride=stride).eval()
        x = torch.zeros(1, 3, 28, 28, dtype=torch.uint8)
        with torch.no_grad():
            grid = model.backbone.stem(model.normalize(x))
        assert grid.shape[-2:] == (side, side)
    with pytest.raises(ConfigError, match=r"model\.stem_stride: must be one of 1, 2, 4, got 3"):
        load_model_config({"model": {"arch": "cnn", "stem_stride": 3}})


def test_vit_rejects_an_image_size_it_was_not_built_for():
    model = make_model("vit", 1).eval()
    x = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"built for 28x28 images \(model.image_size\), got 32x32"):
        model(x)


def test_vit_tokens_and_pooling():
    cls_model, mean_model = make_model("vit", 1).eval(), make_model("vit-mean", 1).eval()
    x = raw_images(2, 1)
    with torch.no_grad():
        cls_tokens = cls_model.backbone.forward_features(cls_model.normalize(x))
        mean_tokens = mean_model.backbone.forward_features(mean_model.normalize(x))
        mean_logits = mean_model.backbone.head(mean_tokens.mean(dim=1))
        direct = mean_model(x)
    assert cls_tokens.shape == (2, 1 + 49, 128)  # class token + 7x7 patches of 4x4
    assert mean_tokens.shape == (2, 49, 128)
    assert torch.allclose(direct, mean_logits, atol=1e-6)
    assert "backbone.cls_token" in dict(cls_model.named_parameters())
    assert "backbone.cls_token" not in dict(mean_model.named_parameters())


def test_attention_equals_the_textbook_formula():
    torch.manual_seed(0)
    attn = Attention(dim=16, heads=4, attn_dropout=0.0, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)  # (B, N, D)
    q, k, v = attn.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1)  # (B, H, N, N)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_resnet_downsamples_by_the_product_of_strides():
    model = make_model("resnet", 1).eval()
    with torch.no_grad():
        features = model.backbone.forward_features(model.normalize(raw_images(2, 1)))
    assert features.shape == (2, 256, 7, 7)  # 28 / (1 * 2 * 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_steps_reduce_the_loss(arch):
    """A few optimiser steps on one fixed batch: each architecture can fit it."""
    x, y = raw_images(4, 1), torch.arange(4) % NUM_CLASSES
    model = make_model(arch, 1, dropout=0.0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize(
    ("schema", "values", "key"),
    [
        (ViTConfig, {"dim": 130, "heads": 4}, "heads"),
        (ViTConfig, {"image_size": 28, "patch_size": 5}, "patch_size"),
        (ViTConfig, {"depth": 0}, "depth"),
        (ViTConfig, {"dropout": 1.0}, "dropout"),
        (ResNetConfig, {"strides": [1, 2]}, "strides"),
        (ResNetConfig, {"blocks": [2, 0, 2]}, "blocks"),
        (ResNetConfig, {"strides": [1, 3, 2]}, "strides"),
        (ResNetConfig, {"channels": []}, "channels"),
    ],
)
def test_bad_model_config_names_the_key(schema, values, key):
    arch = schema().arch
    with pytest.raises(ConfigError, match=rf"^p.yaml: model\.{key}: "):
        load_model_config({"model": {"arch": arch, **values}}, where="p.yaml")


def test_vit_pool_must_be_cls_or_mean():
    with pytest.raises(ConfigError, match=r"model\.pool"):
        load_model_config({"model": {"arch": "vit", "pool": "max"}})


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_rebuilds_the_same_model(arch, tmp_path):
    model = make_model(arch, 1).eval()
    cfg = load_model_config({"model": {"arch": arch} | VARIANTS.get(arch, {})})
    meta = {
        "class_names": [str(i) for i in range(NUM_CLASSES)],
        "in_channels": 1,
        "image_shape": [1, 28, 28],
        "normalization": {"mean": [0.3], "std": [0.2]},
    }
    save_checkpoint(tmp_path / "model.pt", model, cfg, meta)
    loaded, _ = load_checkpoint(tmp_path / "model.pt")
    x = raw_images(2, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_registering_an_architecture_twice_or_with_a_foreign_schema_fails():
    from dataclasses import dataclass

    from mlpipe.models.registry import register

    @dataclass
    class OtherConfig:
        arch: str = "other"

    with pytest.raises(ValueError, match="registered twice"):
        register("cnn", ARCHITECTURES["cnn"].config)(torch.nn.Identity)
    with pytest.raises(ValueError, match="must default to 'mine'"):
        register("mine", OtherConfig)(torch.nn.Identity)
    assert "mine" not in ARCHITECTURES


def test_inference_batches_hold_about_the_same_values_whatever_the_image_size():
    assert inference_batch((1, 28, 28)) == 1000  # Fashion-MNIST: the cap, as before
    assert inference_batch((3, 96, 96)) == 75
    assert inference_batch((3, 224, 224)) == 13
    assert inference_batch((3, 4096, 4096)) == 1  # never zero
    for shape in [(3, 96, 96), (3, 224, 224), (1, 512, 512)]:
        values = inference_batch(shape) * shape[0] * shape[1] * shape[2]
        assert 0.9 * INFERENCE_VALUES <= values <= INFERENCE_VALUES
