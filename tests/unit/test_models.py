"""Every architecture in the registry, built as the pipeline builds it (timm-style checks)."""

from __future__ import annotations

import pytest
import torch

from mlpipe.config import load_model_config
from mlpipe.models import ARCHITECTURES, Classifier, build_model
from mlpipe.models.common import Normalize

NUM_CLASSES = 5
ARCHS = sorted(ARCHITECTURES)


def make_model(arch: str, in_channels: int) -> Classifier:
    cfg = load_model_config({"model": {"arch": arch}})
    mean, std = [0.3] * in_channels, [0.2] * in_channels
    torch.manual_seed(0)
    return build_model(cfg, in_channels, NUM_CLASSES, mean, std)


def raw_images(batch: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, 28, 28), generator=generator, dtype=torch.uint8)


def test_registry_is_not_empty():
    assert "cnn" in ARCHS


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
