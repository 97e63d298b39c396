import numpy as np
import pytest

from mlpipe.evaluate.calibration import brier, ece, fit_temperature, nll


def test_ece_known_value() -> None:
    # four predictions at confidence 0.8 in one bin, half right: |0.5 - 0.8| = 0.3
    probs = np.array([[0.8, 0.2]] * 4)
    labels = np.array([0, 0, 1, 1])
    assert ece(probs, labels) == pytest.approx(0.3)


def test_perfect_predictions() -> None:
    probs = np.eye(3)
    labels = np.arange(3)
    assert ece(probs, labels) == pytest.approx(0.0)
    assert nll(probs, labels) == pytest.approx(0.0, abs=1e-9)
    assert brier(probs, labels) == pytest.approx(0.0)


def test_temperature_scaling_lowers_nll_on_overconfident_toy() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3))
    logits[np.arange(500), labels] += 1.0
    logits *= 8.0  # deliberately over-confident

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    t = fit_temperature(logits, labels)
    assert t > 1.0
    assert nll(softmax(logits / t), labels) < nll(softmax(logits), labels)
