"""Stratified, deterministic hold-out of part of a split: ingest's test split for sources
without one, and preprocess's validation split."""

from __future__ import annotations

import numpy as np

from mlpipe.dataset import ImageSplit
from mlpipe.errors import DataError


def stratified_split(
    split: ImageSplit, fraction: float, seed: int, where: str = "train"
) -> tuple[ImageSplit, ImageSplit]:
    """Split off `fraction` of `split`, keeping class proportions; same seed, same split."""
    keep, held = stratified_indices(split.labels, fraction, seed, where)
    return _take(split, keep), _take(split, held)


def stratified_indices(
    labels: np.ndarray, fraction: float, seed: int, where: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Positions kept and held out (`fraction`, per class), each sorted; no pixels needed."""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.size and present.min() < 2:
        rare = int(np.flatnonzero(counts == present.min())[0])
        raise DataError(
            f"{where}: class {rare} has {present.min()} image(s); "
            "a stratified split needs at least 2 per class"
        )
    from sklearn.model_selection import train_test_split  # slow import: only here

    index = np.arange(len(labels))
    try:
        keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DataError(
            f"{where}: cannot split {fraction} off {len(labels)} images: {exc}"
        ) from None
    return np.sort(keep), np.sort(held)


def _take(split: ImageSplit, index: np.ndarray) -> ImageSplit:
    ids = None if split.ids is None else split.ids[index]
    return ImageSplit(images=split.images[index], labels=split.labels[index], ids=ids)
