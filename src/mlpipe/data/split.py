"""Deterministic stratified splitting and train-only normalisation statistics."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mlpipe.data.dataset import ImageDataset, ImageSplit
from mlpipe.errors import DataError

MIN_STD = 1e-6  # below this a channel is constant (float rounding leaves ~1e-17)


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


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) uint8 images, in 0..1 units."""
    if len(images) == 0:
        raise DataError("cannot compute normalisation statistics of an empty split")
    channels = images.shape[1]
    mean, std = [], []
    for c in range(channels):  # float64 per channel: exact, and bounded memory
        values = images[:, c].astype(np.float64) / 255.0
        mean.append(float(values.mean()))
        spread = float(values.std())
        std.append(spread if spread > MIN_STD else 1.0)  # a constant channel: no scaling
    return mean, std


def make_processed(raw: ImageDataset, val_fraction: float, seed: int) -> ImageDataset:
    """train -> train/val (stratified); test stays the test set; stats from train only."""
    if "train" not in raw.splits or "test" not in raw.splits:
        raise DataError(f"raw data needs 'train' and 'test' splits, found {sorted(raw.splits)}")
    train, val = stratified_split(raw.splits["train"], val_fraction, seed)
    mean, std = channel_stats(train.images)
    return ImageDataset(
        splits={"train": train, "val": val, "test": raw.splits["test"]},
        class_names=raw.class_names,
        source=raw.source,
        extra={
            "normalization": {"mean": mean, "std": std},
            "val_fraction": val_fraction,
            "split_seed": seed,
        },
    )


def _take(split: ImageSplit, index: np.ndarray) -> ImageSplit:
    ids = None if split.ids is None else split.ids[index]
    return ImageSplit(images=split.images[index], labels=split.labels[index], ids=ids)
