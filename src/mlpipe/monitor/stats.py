"""The drift tests, pure numpy + scipy: values in, values out.

Every test compares a batch with a reference sample of the training distribution:

- pixel features (`PIXEL_FEATURES`, one row per image) and the model's penultimate-layer
  embeddings: a two-sample Kolmogorov-Smirnov test per column;
- predicted classes: a chi-squared test of homogeneity on the 2 x K table of counts.

All these p-values form one family, corrected with Bonferroni: drift is declared when
any p-value is below alpha / (number of tests). Under the null hypothesis (the batch is an
i.i.d. sample of the reference's distribution) the chance of a false alarm for a batch is
therefore at most `alpha`, whatever the dependence between the columns. Bonferroni and the
KS test on discrete columns (ties) are both conservative: the measured rate is lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

DARK, BRIGHT = 25, 230  # pixel values counted as background / saturated
PIXEL_FEATURES = ["mean", "std", "min", "max", "dark_fraction", "bright_fraction", "edge"]


CHUNK_VALUES = 2**23  # float64 values converted at a time: 64 MiB, whatever the sample


def pixel_features(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) pixels 0..255 -> (N, len(PIXEL_FEATURES)) float64 per-image features.

    edge: mean absolute difference between neighbouring pixels (sharpness, noise).
    Computed a chunk of images at a time (each row alone, so the chunking changes nothing):
    memory stays at CHUNK_VALUES floats, not the sample's pixels eight times over.
    """
    n = len(images)
    per_image = int(np.prod(images.shape[1:])) if images.ndim > 1 else 0
    if per_image == 0:
        return np.zeros((n, len(PIXEL_FEATURES)))
    step = max(1, CHUNK_VALUES // per_image)
    out = np.empty((n, len(PIXEL_FEATURES)))
    for start in range(0, n, step):
        out[start : start + step] = _features(images[start : start + step])
    return out


def _features(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(len(x), -1)  # (N, C*H*W)
    dx = np.abs(np.diff(x, axis=-1)).reshape(len(x), -1).mean(axis=1) if x.shape[-1] > 1 else 0
    dy = np.abs(np.diff(x, axis=-2)).reshape(len(x), -1).mean(axis=1) if x.shape[-2] > 1 else 0
    return np.stack(
        [
            flat.mean(axis=1),
            flat.std(axis=1),
            flat.min(axis=1),
            flat.max(axis=1),
            (flat <= DARK).mean(axis=1),
            (flat >= BRIGHT).mean(axis=1),
            (np.asarray(dx) + np.asarray(dy)) / 2 * np.ones(len(x)),
        ],
        axis=1,
    )


def ks_columns(
    reference: np.ndarray, batch: np.ndarray, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS per column of (M, D) `reference` vs (N, D) `batch`: (D statistics,
    D p-values), the asymptotic p-value as scipy's `ks_2samp(method="asymp")` gives it.

    The largest gap between the two empirical CDFs lies at a batch value, just at or just
    before it (between batch values the batch's CDF is flat), so both CDFs are read there
    only: O(N log M) per column. `presorted`: the reference columns are already sorted.
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref if presorted else np.sort(ref, axis=0)  # (M, D)
    new = np.sort(np.asarray(batch, dtype=np.float64), axis=0)  # (N, D)
    m, n = len(ref), len(new)
    if m == 0 or n == 0:
        raise ValueError(f"KS needs two non-empty samples, got {m} and {n}")
    d = np.zeros(ref.shape[1])
    for j in range(ref.shape[1]):
        x = new[:, j]
        at = np.abs(np.searchsorted(ref[:, j], x, "right") / m - np.searchsorted(x, x, "right") / n)
        before = np.abs(
            np.searchsorted(ref[:, j], x, "left") / m - np.searchsorted(x, x, "left") / n
        )
        d[j] = max(at.max(), before.max())
    en = m * n / (m + n)
    p = sps.kstwo.sf(d, np.round(en).astype(int)) if en >= 1 else np.ones_like(d)
    return d, np.clip(p, 0.0, 1.0)


@dataclass
class ClassShift:
    statistic: float
    p_value: float
    dof: int
    reference_share: list[float]
    batch_share: list[float]


def class_shift(reference_counts: np.ndarray, batch_counts: np.ndarray) -> ClassShift:
    """Chi-squared test of homogeneity on predicted-class counts (classes never predicted
    in either sample are left out; with one class left there is nothing to test: p = 1)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    new = np.asarray(batch_counts, dtype=np.float64)
    share_ref = (ref / max(ref.sum(), 1)).tolist()
    share_new = (new / max(new.sum(), 1)).tolist()
    seen = (ref + new) > 0
    if seen.sum() < 2 or ref.sum() == 0 or new.sum() == 0:
        return ClassShift(0.0, 1.0, 0, share_ref, share_new)
    table = np.stack([ref[seen], new[seen]])
    result = sps.chi2_contingency(table, correction=False)
    return ClassShift(
        float(result.statistic), float(result.pvalue), int(result.dof), share_ref, share_new
    )


@dataclass
class FamilyResult:
    """One group of tests (pixels, embeddings, classes) against the common threshold."""

    name: str
    columns: list[str]
    statistics: list[float]
    p_values: list[float]
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> list[int]:
        """Indices of the columns whose p-value is below the threshold, smallest p first."""
        hits = [i for i, p in enumerate(self.p_values) if p < self.threshold]
        return sorted(hits, key=lambda i: self.p_values[i])

    @property
    def min_p(self) -> float:
        return min(self.p_values) if self.p_values else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tests": len(self.p_values),
            "drifted": [self.columns[i] for i in self.drifted],
            "min_p_value": self.min_p,
            "threshold": self.threshold,
            "columns": {
                c: {"statistic": s, "p_value": p}
                for c, s, p in zip(self.columns, self.statistics, self.p_values, strict=True)
            },
            **self.extra,
        }


@dataclass
class DriftResult:
    alpha: float
    n_tests: int
    families: list[FamilyResult]

    @property
    def threshold(self) -> float:
        return self.alpha / self.n_tests

    @property
    def drift(self) -> bool:
        return any(f.drifted for f in self.families)


def detect_drift(
    reference: dict[str, np.ndarray],
    batch: dict[str, np.ndarray],
    class_counts: tuple[np.ndarray, np.ndarray] | None,
    alpha: float,
    columns: dict[str, list[str]] | None = None,
    presorted: bool = False,
) -> DriftResult:
    """KS per column of each (M, D) matrix in `reference` against the same-named (N, D)
    matrix of `batch`, plus the class test on (reference counts, batch counts); one
    Bonferroni family of size (total columns + 1 if class_counts). `presorted`: every
    reference matrix is sorted column by column (a bench reuses them)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n_tests = sum(m.shape[1] for m in reference.values()) + (class_counts is not None)
    threshold = alpha / max(n_tests, 1)
    families = []
    for name, ref in reference.items():
        d, p = ks_columns(ref, batch[name], presorted)
        names = (columns or {}).get(name) or [f"{name}[{i}]" for i in range(ref.shape[1])]
        families.append(FamilyResult(name, names, d.tolist(), p.tolist(), threshold))
    if class_counts is not None:
        shift = class_shift(*class_counts)
        extra = {
            "dof": shift.dof,
            "reference_share": shift.reference_share,
            "batch_share": shift.batch_share,
        }
        families.append(
            FamilyResult("classes", ["chi2"], [shift.statistic], [shift.p_value], threshold, extra)
        )
    return DriftResult(alpha, n_tests, families)
