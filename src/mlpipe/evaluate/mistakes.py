"""Error analysis on test predictions (pure numpy, no I/O): which classes the model
confuses most, and its most confident mistakes."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np


def top_confusions(
    matrix: list[list[int]], class_names: list[str], k: int = 10
) -> list[dict[str, Any]]:
    """The k most frequent (true, predicted) pairs off the diagonal, most frequent first
    (ties in class order); share: that pair's fraction of all mistakes."""
    m = np.asarray(matrix, dtype=np.int64)
    off = m.copy()
    np.fill_diagonal(off, 0)
    total = int(off.sum())
    pairs = [(int(off[t, p]), t, p) for t in range(len(m)) for p in range(len(m)) if off[t, p]]
    pairs.sort(key=lambda row: (-row[0], row[1], row[2]))
    return [
        {
            "true": class_names[t],
            "predicted": class_names[p],
            "count": count,
            "share": round(count / total, 4),
        }
        for count, t, p in pairs[:k]
    ]


def confusions_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["true", "predicted", "count", "share"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def confident_mistakes(
    probs: np.ndarray, labels: np.ndarray, per_class: int = 4
) -> list[list[int]]:
    """Per true class, the indices of up to `per_class` wrong predictions, most confident
    (highest probability of the wrong class) first."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    out = []
    for c in range(probs.shape[1]):
        wrong = np.flatnonzero((labels == c) & (pred != c))
        order = wrong[np.argsort(-conf[wrong], kind="stable")]
        out.append([int(i) for i in order[:per_class]])
    return out
