"""Normalisation statistics: numpy only, so the bench can use them on a bare GPU box."""

from __future__ import annotations

import math

import numpy as np

from mlpipe.errors import DataError
from mlpipe.shards import ShardedSplit

MIN_STD = 1e-6  # below this a channel is constant (float rounding leaves ~1e-17)


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


BLOCK_BYTES = 16 * 2**20  # pixels of a shard copied at a time


def streamed_channel_stats(split: ShardedSplit) -> tuple[list[float], list[float]]:
    """`channel_stats` of a split on disk in one pass over its rows, shard by shard.

    Per channel it counts each of the 256 values (exact integers), so the sums of x and
    x^2 and the variance are exact (Python integers) until the final division and square
    root: equal to `channel_stats` to rounding, whatever the order or size of the blocks.
    """
    if len(split) == 0:
        raise DataError("cannot compute normalisation statistics of an empty split")
    channels = split.image_shape[0]
    counts = np.zeros((channels, 256), dtype=np.int64)
    block = max(1, BLOCK_BYTES // int(np.prod(split.image_shape)))
    for number, positions in split.shards_in_order():
        pixels = split.read(number)
        rows = np.sort(split.offset[positions])  # in file order: sequential reads
        for start in range(0, len(rows), block):
            chunk = pixels[rows[start : start + block]]  # (k, C, H, W) copy
            for c in range(channels):
                counts[c] += np.bincount(chunk[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=object)
    mean, std = [], []
    for c in range(channels):
        n = int(counts[c].sum())
        total = int((counts[c].astype(object) * values).sum())
        squares = int((counts[c].astype(object) * values * values).sum())
        mean.append(total / (n * 255))
        spread = math.sqrt((squares * n - total * total) / (n * n)) / 255  # exact variance
        std.append(spread if spread > MIN_STD else 1.0)
    return mean, std
