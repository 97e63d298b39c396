import numpy as np
import pytest

from mlpipe.evaluate.calibration import (
    brier,
    calibration_report,
    ece,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)


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


def overconfident_toy(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 1.0
    return logits * 8.0, labels


def test_reliability_bins_match_ece() -> None:
    probs = np.array([[0.8, 0.2]] * 4 + [[0.05, 0.95]] * 2)
    labels = np.array([0, 0, 1, 1, 1, 1])
    bins = reliability_bins(probs, labels, n_bins=10)
    assert sum(bins["count"]) == 6 and len(bins["centre"]) == 10
    assert bins["count"][7] == 4 and bins["accuracy"][7] == pytest.approx(0.5)
    assert bins["confidence"][9] == pytest.approx(0.95) and bins["accuracy"][9] == 1.0
    assert bins["accuracy"][0] is None  # empty bin
    # ECE is the count-weighted gap of those bins: 4/6 * 0.3 + 2/6 * 0.05
    assert ece(probs, labels, n_bins=10) == pytest.approx(4 / 6 * 0.3 + 2 / 6 * 0.05)


def test_calibration_report_shows_the_fitted_temperature_helping() -> None:
    logits, labels = overconfident_toy()
    val, test = slice(0, 250), slice(250, 500)
    t = fit_temperature(logits[val], labels[val])  # fitted on one half, judged on the other
    report = calibration_report(logits[test], labels[test], t)
    assert report["temperature"] == pytest.approx(t, abs=1e-4)
    assert report["ece"] < report["ece_uncalibrated"]
    assert report["nll"] < report["nll_uncalibrated"]
    assert report["brier"] < report["brier_uncalibrated"]
    unscaled = calibration_report(logits[test], labels[test], 1.0)
    assert unscaled["ece"] == unscaled["ece_uncalibrated"]


def test_softmax_with_temperature() -> None:
    z = np.array([[2.0, 0.0], [1000.0, 0.0]])
    assert softmax(z)[0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert softmax(z, 2.0)[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert np.isfinite(softmax(z)).all()  # no overflow


def test_temperature_scaled_module_divides_logits_and_keeps_argmax() -> None:
    import torch

    from mlpipe.models.common import TemperatureScaled

    base = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    scaled = TemperatureScaled(base, 2.5)
    torch.testing.assert_close(scaled(x), base(x) / 2.5)
    assert (scaled(x).argmax(1) == base(x).argmax(1)).all()
    assert "temperature" in scaled.state_dict()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TemperatureScaled(base, 0.0)
