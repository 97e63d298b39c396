"""Exact McNemar on per-image correctness."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.evaluate.stats import mcnemar_exact


def pairs(both: int, only_ref: int, only_cand: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    ref = [True] * both + [True] * only_ref + [False] * only_cand + [False] * neither
    cand = [True] * both + [False] * only_ref + [True] * only_cand + [False] * neither
    return np.array(ref), np.array(cand)


def test_counts_only_discordant_pairs():
    test = mcnemar_exact(*pairs(both=80, only_ref=3, only_cand=12, neither=5))
    assert (test.n, test.b, test.c) == (100, 3, 12)
    # 2 * P(X <= 3), X ~ Binomial(15, 1/2) = 2 * (1 + 15 + 105 + 455) / 2**15
    assert test.p_value == pytest.approx(2 * 576 / 2**15)
    assert test.candidate_better and test.significant(0.05)


def test_identical_models_give_p_one():
    test = mcnemar_exact(*pairs(both=50, only_ref=0, only_cand=0, neither=50))
    assert (test.b, test.c, test.p_value) == (0, 0, 1.0)
    assert not test.candidate_better and not test.significant(0.05)


def test_two_sided_and_symmetric():
    worse = mcnemar_exact(*pairs(both=10, only_ref=12, only_cand=3, neither=0))
    better = mcnemar_exact(*pairs(both=10, only_ref=3, only_cand=12, neither=0))
    assert worse.p_value == pytest.approx(better.p_value)
    assert not worse.candidate_better


def test_five_discordant_wins_are_not_significant_at_5_percent():
    test = mcnemar_exact(*pairs(both=0, only_ref=0, only_cand=5, neither=0))
    assert test.p_value == pytest.approx(2 / 2**5)  # 0.0625
    assert not test.significant(0.05)


def test_mismatched_lengths_fail():
    with pytest.raises(ValueError, match="equal length"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_to_dict():
    assert mcnemar_exact(*pairs(1, 1, 0, 0)).to_dict() == {"n": 2, "b": 1, "c": 0, "p_value": 1.0}
