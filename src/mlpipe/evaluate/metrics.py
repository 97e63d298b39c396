"""Classification metrics on predictions (scikit-learn underneath)."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix.

    The confusion matrix is [actual][predicted], rows and columns in class order.
    """
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4
        ),
        # over classes present in y_true: an absent class has no recall to speak of
        "worst_class_recall": round(float(recall[support > 0].min(initial=1.0)), 4),
        "n": len(y_true),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


HEADLINE = ("accuracy", "macro_f1", "worst_class_recall", "ece", "n")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures `dvc exp show` and `dvc metrics diff` show (reports/evaluate.json); the
    per-class figures and the confusion matrix go to a separate, non-metric file."""
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def flat_metrics(metrics: dict[str, Any], prefix: str = "test/") -> dict[str, float]:
    """The run's test metrics: the headline scalars (test/accuracy, ...) and calibration
    (test/ece, ...); a chart per class and statistic (30 for Fashion-MNIST) buried them,
    see `per_class_table`."""
    return {
        f"{prefix}{k}": float(metrics[k]) for k in ("accuracy", "macro_f1", "worst_class_recall")
    } | {
        f"{prefix}{k}": float(v)  # ece, nll, brier, before and after temperature scaling
        for k, v in (metrics.get("calibration") or {}).items()
        if k != "temperature"  # a train-stage figure, logged there
    }


def per_class_table(metrics: dict[str, Any]) -> dict[str, list[Any]]:
    """Per-class figures as one table (columns -> values), logged once per run."""
    rows = metrics["per_class"]
    table: dict[str, list[Any]] = {"class": list(rows)}
    for stat in ("precision", "recall", "f1", "support"):
        table[stat] = [rows[name][stat] for name in rows]
    return table


def predictions_csv(y_true: list[int], y_pred: list[int], names: list[str]) -> str:
    """One row per test image, `actual,predicted` class names (DVC's confusion plot)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((names[t], names[p]) for t, p in zip(y_true, y_pred, strict=True))
    return buf.getvalue()
