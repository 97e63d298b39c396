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
    _save(fig, path, dpi=120)


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
    _save(fig, path, dpi=120)


def save_mistake_gallery(
    images: np.ndarray,
    probs: np.ndarray,
    picks: list[list[int]],
    class_names: list[str],
    path: str | Path,
) -> None:
    """One row per true class, its most confident mistakes (mistakes.confident_mistakes)
    left to right, each titled with the predicted class and its probability."""
    cols = max(1, max((len(row) for row in picks), default=1))
    rows = len(picks)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols + 1.2, 1.5 * rows), squeeze=False)
    for r, row in enumerate(picks):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0:
                ax.set_ylabel(f"true: {class_names[r]}", fontsize=7, rotation=0, ha="right")
            if c >= len(row):
                if c == 0:
                    ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=7)
                continue
            i = row[c]
            image = images[i]
            shown = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
            ax.imshow(shown, cmap="gray" if image.shape[0] == 1 else None)
            p = int(probs[i].argmax())
            ax.set_title(f"{class_names[p]} {probs[i, p]:.2f}", fontsize=7, color="tab:red")
    fig.suptitle("Most confident test mistakes (predicted class, probability)", fontsize=9)
    _save(fig, path, dpi=100)


def save_attribution_grid(
    images: np.ndarray,
    attributions: np.ndarray,
    labels: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    path: str | Path,
    title: str,
    rollout: np.ndarray | None = None,
) -> None:
    """Per sampled image: the image, then its attribution summed over channels (red: for the
    explained class, blue: against it, symmetric scale per image), then, for a ViT, its
    attention rollout (N, S/p, S/p) drawn over the image's pixels."""
    n, columns = len(images), 2 if rollout is None else 3
    fig, axes = plt.subplots(n, columns, figsize=(1.8 * columns, 1.6 * n + 0.6), squeeze=False)
    for r in range(n):
        image, attr = images[r], attributions[r].sum(axis=0)
        shown = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        axes[r][0].imshow(shown, cmap="gray" if image.shape[0] == 1 else None)
        limit = float(np.abs(attr).max()) or 1.0
        axes[r][1].imshow(attr, cmap="bwr", vmin=-limit, vmax=limit)
        axes[r][0].set_ylabel(f"true: {class_names[int(labels[r])]}", fontsize=7)
        axes[r][1].set_title(f"IG for {class_names[int(targets[r])]}", fontsize=7)
        if rollout is not None:
            side = image.shape[-1]
            axes[r][2].imshow(rollout[r], cmap="magma", vmin=0, vmax=1, extent=(0, side, side, 0))
            axes[r][2].set_title("attention rollout", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    _save(fig, path, dpi=100)


def _save(fig: Any, path: str | Path, dpi: int) -> None:
    """Lay out, write the PNG atomically (a reader never sees half a file), free the figure."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
