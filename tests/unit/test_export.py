"""ONNX and TorchScript exports agree with the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlpipe.models import build_model
from mlpipe.models.cnn import CNNConfig
from mlpipe.models.export import (
    compare,
    export_and_check,
    onnx_probabilities,
    torch_probabilities,
    torchscript_probabilities,
)


def test_compare_passes_close_and_fails_far_or_flipped():
    ref = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    ok = compare("onnx", ref, ref + 1e-6)
    assert ok.passed and ok.predictions_match and ok.max_abs_diff == pytest.approx(1e-6, rel=0.1)
    far = compare("onnx", ref, ref + np.float32(2e-4))
    assert not far.passed and far.predictions_match
    flipped = compare("onnx", ref, ref[:, ::-1])
    assert not flipped.passed and not flipped.predictions_match
    assert "FAILED" in flipped.summary()
    shape = compare("onnx", ref, ref[:1])
    assert not shape.passed and shape.to_dict()["passed"] is False


@pytest.mark.slow
def test_exports_match_pytorch_for_any_batch_size(tmp_path):
    torch.manual_seed(0)
    model = build_model(CNNConfig(channels=[4, 8], hidden=16, pool_size=2), 1, 5, [0.3], [0.3])
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28)).astype(np.uint8)
    checks = export_and_check(model.eval(), images, tmp_path)
    assert set(checks) == {"torchscript", "onnx"}
    for check in checks.values():
        assert check.passed, check.summary()
        assert check.n_images == 40 and check.max_abs_diff < 1e-4
    for batch in (1, 3):  # the example batch was 8: the batch dimension is dynamic
        ref = torch_probabilities(model, images[:batch])
        np.testing.assert_allclose(
            torchscript_probabilities(tmp_path / "model.torchscript.pt", images[:batch]),
            ref,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            onnx_probabilities(tmp_path / "model.onnx", images[:batch]), ref, atol=1e-5
        )
