"""One row per image: the flat table that the validation suite checks.

Expectations work on columns, not on (N, C, H, W) arrays, so each image becomes
a row of facts (shape, pixel range, content hash) that a check can name.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mlpipe.data.dataset import ImageDataset, ImageSplit

# Column order of `image_table`; the `schema` check expects exactly this set.
TABLE_COLUMNS: list[str] = [
    "id",
    "split",
    "label",
    "channels",
    "height",
    "width",
    "pixel_min",
    "pixel_max",
    "pixel_mean",
    "sha1",
]


def image_table(ds: ImageDataset) -> pd.DataFrame:
    """Concatenate `split_table` over the splits, in the dataset's split order."""
    parts = [split_table(name, split) for name, split in ds.splits.items()]
    if not parts:
        return pd.DataFrame({c: [] for c in TABLE_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def split_table(name: str, split: ImageSplit) -> pd.DataFrame:
    n, c, h, w = split.images.shape
    flat = np.ascontiguousarray(split.images).reshape(n, c * h * w)  # (N, C*H*W)
    return pd.DataFrame(
        {
            "id": image_ids(name, n),
            "split": np.full(n, name),
            "label": np.asarray(split.labels, dtype=np.int64),
            "channels": np.full(n, c, dtype=np.int64),
            "height": np.full(n, h, dtype=np.int64),
            "width": np.full(n, w, dtype=np.int64),
            "pixel_min": flat.min(axis=1).astype(np.int64),
            "pixel_max": flat.max(axis=1).astype(np.int64),
            "pixel_mean": flat.mean(axis=1, dtype=np.float64),
            "sha1": row_sha1(flat),
        },
        columns=TABLE_COLUMNS,
    )


def image_ids(split: str, n: int) -> np.ndarray:
    """`<split>-<index:08d>`, the index counting within the split."""
    if n == 0:  # np.char.zfill fails on an empty array (numpy 2.4)
        return np.array([], dtype=str)
    digits = np.char.zfill(np.arange(n).astype(str), 8)
    return np.char.add(f"{split}-", digits)


def row_sha1(flat: np.ndarray) -> np.ndarray:
    """Hex SHA-1 of each row's bytes; `flat` is (N, K) and C-contiguous."""
    # a str array even when empty, so concatenating splits keeps the str dtype
    return np.array([hashlib.sha1(row).hexdigest() for row in flat], dtype=str)
