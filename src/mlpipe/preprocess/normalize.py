"""Normalisation statistics: numpy only, so the bench can use them on a bare GPU box."""

from __future__ import annotations

import numpy as np

from mlpipe.errors import DataError

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
