"""The monitor's statistics, pure: KS per column, the class test, Bonferroni, features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from mlpipe.monitor import stats
from mlpipe.monitor.stats import (
    PIXEL_FEATURES,
    class_shift,
    detect_drift,
    ks_columns,
    pixel_features,
)


def test_ks_columns_matches_scipy_asymptotic() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 4))
    new = rng.normal(loc=[0, 0.3, 0, 1.0], size=(80, 4))
    d, p = ks_columns(ref, new)
    for j in range(4):
        want = sps.ks_2samp(ref[:, j], new[:, j], method="asymp")
        assert d[j] == pytest.approx(want.statistic)
        assert p[j] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-12)
    assert p[3] < 1e-6 < p[0]


def test_ks_columns_with_ties_is_exact_on_the_statistic() -> None:
    ref = np.array([[0.0], [0.0], [1.0], [1.0]])
    new = np.array([[1.0], [1.0]])
    d, _ = ks_columns(ref, new)
    assert d[0] == pytest.approx(0.5)


def test_class_shift_agrees_with_chi2_contingency_and_skips_empty_classes() -> None:
    ref = np.array([50, 50, 0, 100])
    new = np.array([30, 5, 0, 15])
    shift = class_shift(ref, new)
    want = sps.chi2_contingency(np.array([[50, 50, 100], [30, 5, 15]]), correction=False)
    assert shift.statistic == pytest.approx(want.statistic)
    assert shift.p_value == pytest.approx(want.pvalue)
    assert shift.dof == 2
    assert shift.batch_share == pytest.approx([0.6, 0.1, 0.0, 0.3])


def test_class_shift_with_one_class_has_nothing_to_test() -> None:
    assert class_shift(np.array([10, 0]), np.array([5, 0])).p_value == 1.0


def test_bonferroni_threshold_and_decision() -> None:
    rng = np.random.default_rng(1)
    ref = {"a": rng.normal(size=(500, 3)), "b": rng.normal(size=(500, 6))}
    same = {"a": rng.normal(size=(100, 3)), "b": rng.normal(size=(100, 6))}
    counts = (np.array([100, 100]), np.array([50, 50]))
    result = detect_drift(ref, same, counts, alpha=0.01)
    assert result.n_tests == 3 + 6 + 1
    assert result.threshold == pytest.approx(0.001)
    assert not result.drift
    shifted = {"a": same["a"], "b": same["b"] + np.array([0, 0, 0, 0, 0, 1.0])}
    hit = detect_drift(ref, shifted, counts, alpha=0.01)
    assert hit.drift
    assert [f.drifted for f in hit.families] == [[], [5], []]


def test_false_alarm_rate_stays_below_alpha_on_null_batches() -> None:
    """Many batches from the reference's own distribution: alarms on at most ~alpha."""
    rng = np.random.default_rng(2)
    ref = {"x": rng.normal(size=(1000, 20))}
    alarms = sum(
        detect_drift(ref, {"x": rng.normal(size=(100, 20))}, None, alpha=0.05).drift
        for _ in range(300)
    )
    assert alarms / 300 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)


def test_alpha_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        detect_drift({"x": np.zeros((3, 1))}, {"x": np.zeros((3, 1))}, None, alpha=1.0)


def test_pixel_features_on_crafted_images() -> None:
    blank = np.zeros((1, 1, 4, 4), dtype=np.uint8)
    checker = (np.indices((4, 4)).sum(axis=0) % 2 * 255).astype(np.uint8)[None, None]
    f = dict(zip(PIXEL_FEATURES, pixel_features(np.concatenate([blank, checker])).T, strict=True))
    assert f["mean"].tolist() == [0.0, 127.5]
    assert f["std"].tolist() == [0.0, 127.5]
    assert f["min"].tolist() == [0.0, 0.0] and f["max"].tolist() == [0.0, 255.0]
    assert f["dark_fraction"].tolist() == [1.0, 0.5]
    assert f["bright_fraction"].tolist() == [0.0, 0.5]
    assert f["edge"].tolist() == [0.0, 255.0]


def test_ks_columns_on_discrete_columns_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 5, size=(400, 3)).astype(float)
    new = rng.integers(1, 6, size=(70, 3)).astype(float)
    d, p = ks_columns(np.sort(ref, axis=0), new, presorted=True)
    for j in range(3):
        want = sps.ks_2samp(ref[:, j], new[:, j], method="asymp")
        assert d[j] == pytest.approx(want.statistic)
        assert p[j] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-12)


def test_pixel_features_are_the_same_computed_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(0).integers(0, 256, (23, 3, 9, 7), dtype=np.uint8)
    whole = pixel_features(images)
    monkeypatch.setattr(stats, "CHUNK_VALUES", 3 * 9 * 7 * 5)  # 5 images a chunk
    np.testing.assert_array_equal(pixel_features(images), whole)
    assert pixel_features(images[:0]).shape == (0, len(PIXEL_FEATURES))
