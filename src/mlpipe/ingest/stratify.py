"""Stratified, deterministic hold-out of part of a split: ingest's test split for sources
without one, and preprocess's validation split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mlpipe.dataset import ImageSplit
from mlpipe.errors import DataError


def stratified_split(
    split: ImageSplit, fraction: float, seed: int, where: str = "train"
) -> tuple[ImageSplit, ImageSplit]:
    """Split off `fraction` of `split`, keeping class proportions; same seed, same split."""
    counts = np.bincount(split.labels)
    present = counts[counts > 0]
    if present.size and present.min() < 2:
        rare = int(np.flatnonzero(counts == present.min())[0])
        raise DataError(
            f"{where}: class {rare} has {present.min()} image(s); "
            "a stratified split needs at least 2 per class"
        )
    index = np.arange(len(split))
    try:
        keep, held = train_test_split(
            index, test_size=fraction, random_state=seed, stratify=split.labels
        )
    except ValueError as exc:
        raise DataError(
            f"{where}: cannot split {fraction} off {len(split)} images: {exc}"
        ) from None
    keep, held = np.sort(keep), np.sort(held)
    return _take(split, keep), _take(split, held)


def _take(split: ImageSplit, index: np.ndarray) -> ImageSplit:
    ids = None if split.ids is None else split.ids[index]
    return ImageSplit(images=split.images[index], labels=split.labels[index], ids=ids)
