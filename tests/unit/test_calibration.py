import numpy as np
import pytest

from mlpipe.evaluate.calibration import brier, ece, nll


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
