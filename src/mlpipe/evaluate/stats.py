"""Paired comparison of two classifiers on the same test images."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest


@dataclass
class McNemar:
    """Exact McNemar test on per-image correctness.

    b: images the reference gets right and the candidate wrong;
    c: images the reference gets wrong and the candidate right.
    Only these discordant pairs carry evidence; under "equally good" each is a fair coin.
    """

    n: int  # images compared
    b: int
    c: int
    p_value: float  # two-sided

    @property
    def candidate_better(self) -> bool:
        return self.c > self.b

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> McNemar:
    """Two-sided exact McNemar: binomial test of b against b + c at p = 1/2."""
    ref = np.asarray(reference_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if ref.shape != cand.shape or ref.ndim != 1:
        raise ValueError(
            f"correctness vectors must be 1-D and of equal length, got {ref.shape} and {cand.shape}"
        )
    b = int(np.count_nonzero(ref & ~cand))
    c = int(np.count_nonzero(~ref & cand))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return McNemar(n=len(ref), b=b, c=c, p_value=min(1.0, p))
