"""Stratified, deterministic hold-out of part of a split: ingest's test split for sources
without one, and preprocess's validation split."""

from __future__ import annotations

import math

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
    n_test = math.ceil(fraction * len(labels))
    n_train = len(labels) - n_test
    classes = int(present.size)
    if min(n_train, n_test) < max(classes, 1):
        raise DataError(
            f"{where}: cannot split {fraction} off {len(labels)} images: {n_train} kept and "
            f"{n_test} held out, each needs at least one image of each of the {classes} classes"
        )
    return _stratified_shuffle_split(labels, n_train, n_test, seed)


def _stratified_shuffle_split(
    labels: np.ndarray, n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """What scikit-learn's `train_test_split(..., stratify=labels, random_state=seed)` picks
    (its StratifiedShuffleSplit, step for step with the same RandomState draws), sorted: the
    same splits as before, without importing scikit-learn (2 s: a tenth of a small ingest).
    tests/unit/test_split.py checks it against scikit-learn over many cases."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    per_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    kept = _approximate_mode(counts, n_train, rng)
    held = _approximate_mode(counts - kept, n_test, rng)
    train, test = [], []
    for i, members in enumerate(per_class):
        shuffled = members.take(rng.permutation(counts[i]), mode="clip")
        train.append(shuffled[: kept[i]])
        test.append(shuffled[kept[i] : kept[i] + held[i]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `_approximate_mode`: per-class draws, ties broken with `rng`."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (where,) = np.where(remainder == value)
            now = min(len(where), need)
            floored[rng.choice(where, size=now, replace=False)] += 1
            need -= now
            if need == 0:
                break
    result: np.ndarray = floored.astype(int)
    return result


def _take(split: ImageSplit, index: np.ndarray) -> ImageSplit:
    ids = None if split.ids is None else split.ids[index]
    return ImageSplit(images=split.images[index], labels=split.labels[index], ids=ids)
