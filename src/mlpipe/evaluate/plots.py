"""Figures for humans; DVC draws its own plots from the CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: stages run in terminals and CI

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from mlpipe.io import atomic_path


def save_confusion_matrix(
    matrix: list[list[int]], class_names: list[str], path: str | Path, title: str
) -> None:
    size = max(6.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d"
    )
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def save_reliability_diagram(
    bins_before: dict[str, list[Any]],
    bins_after: dict[str, list[Any]],
    path: str | Path,
    title: str,
) -> None:
    """Accuracy against confidence per bin (calibration.reliability_bins), before and after
    temperature scaling; the diagonal is perfect calibration, bar width shows the bin."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    width = 1.0 / len(bins_before["centre"])
    for bins, label, colour in (
        (bins_before, "uncalibrated", "tab:red"),
        (bins_after, "temperature-scaled", "tab:blue"),
    ):
        xs = [c for c, a in zip(bins["centre"], bins["accuracy"], strict=True) if a is not None]
        ys = [a for a in bins["accuracy"] if a is not None]
        ax.bar(xs, ys, width=width, alpha=0.45, edgecolor=colour, color=colour, label=label)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
