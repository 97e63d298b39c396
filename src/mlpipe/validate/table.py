"""The flat tables that the validation suite checks, built with pandas.

Expectations work on columns, not on (N, C, H, W) arrays, so each image becomes
a row of facts (shape, pixel range, content hash) that a check can name. Facts
that need other rows (is this image also in train?) are computed here too, and
so is a second, small table with one row per (split, class) for the checks on
class counts, where Great Expectations has no per-group expectation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mlpipe.dataset import ImageDataset, ImageSplit, ShardedDataset
from mlpipe.shards import ShardedSplit, pixel_hashes

TRAIN = "train"  # the split that other splits must not share images with
BLOCK_BYTES = 16 * 2**20  # pixels of a shard copied at a time to compute per-image stats

# The dtype pandas gives a column of Python/numpy strings: `str` in pandas 3,
# `object` before.
STR_DTYPE = str(pd.Series(["a"]).dtype)

# Column -> dtype of `image_table`, in column order; `schema` and `types` check these.
TABLE_DTYPES: dict[str, str] = {
    "id": STR_DTYPE,
    "split": STR_DTYPE,
    "label": "int64",
    "channels": "int64",
    "height": "int64",
    "width": "int64",
    "pixel_min": "int64",
    "pixel_max": "int64",
    "pixel_mean": "float64",
    "sha1": STR_DTYPE,
    "leaked": "bool",  # a non-train image whose pixels are identical to a train image
}
TABLE_COLUMNS: list[str] = list(TABLE_DTYPES)

CLASS_COLUMNS: list[str] = ["id", "split", "label", "count", "share", "imbalance"]


def image_table(ds: ImageDataset) -> pd.DataFrame:
    """One row per image, the splits in the dataset's order (a dataset in memory)."""
    return _joined([split_table(name, split) for name, split in ds.splits.items()])


def streamed_table(ds: ShardedDataset) -> pd.DataFrame:
    """`image_table` of a dataset on disk, read shard by shard and block by block: memory
    holds the table and one block of pixels; the hashes come from the index."""
    return _joined([streamed_split_table(name, split) for name, split in ds.splits.items()])


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return empty_table()
    table = pd.concat(parts, ignore_index=True)
    in_train = table["sha1"].isin(set(table.loc[table["split"] == TRAIN, "sha1"]))
    table["leaked"] = (table["split"] != TRAIN) & in_train
    return table


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in TABLE_DTYPES.items()})


def split_table(name: str, split: ImageSplit) -> pd.DataFrame:
    """The per-image columns of one split (all but `leaked`, which needs every split)."""
    n, c, h, w = split.images.shape
    flat = np.ascontiguousarray(split.images).reshape(n, c * h * w)  # (N, C*H*W)
    stats = Stats.empty(n)
    stats.fill(np.arange(n), flat)
    return _columns(name, split.labels, split.ids, (c, h, w), stats, row_sha1(flat))


def streamed_split_table(name: str, split: ShardedSplit) -> pd.DataFrame:
    """`split_table` of a split on disk; each shard is verified against its index once."""
    n = len(split)
    stats = Stats.empty(n)
    hashes = split.hashes
    computed = np.empty(n, dtype=object) if hashes is None else None
    size = int(np.prod(split.image_shape))
    block = max(1, BLOCK_BYTES // max(size, 1))
    for number, positions in split.shards_in_order():
        pixels = split.read(number)
        for start in range(0, len(positions), block):
            where = positions[start : start + block]
            flat = np.ascontiguousarray(pixels[split.offset[where]]).reshape(len(where), size)
            stats.fill(where, flat)
            if computed is not None:
                computed[where] = pixel_hashes(flat)
    sha1 = np.asarray(hashes if computed is None else computed.tolist(), dtype=str)
    return _columns(name, split.labels, split.ids, split.image_shape, stats, sha1)


class Stats:
    """Per-image pixel minimum, maximum and mean, filled block by block."""

    def __init__(self, low: np.ndarray, high: np.ndarray, mean: np.ndarray) -> None:
        self.low, self.high, self.mean = low, high, mean

    @classmethod
    def empty(cls, n: int) -> Stats:
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float64))

    def fill(self, where: np.ndarray, flat: np.ndarray) -> None:
        """The rows `where` of the table from their pixels `flat` (k, C*H*W)."""
        if len(where) == 0:
            return
        self.low[where] = flat.min(axis=1)
        self.high[where] = flat.max(axis=1)
        self.mean[where] = flat.mean(axis=1, dtype=np.float64)


def _columns(
    name: str,
    labels: np.ndarray,
    ids: np.ndarray | None,
    shape: tuple[int, int, int],
    stats: Stats,
    sha1: np.ndarray,
) -> pd.DataFrame:
    n = len(labels)
    c, h, w = shape
    return pd.DataFrame(
        {
            "id": image_ids(name, n) if ids is None else np.asarray(ids, dtype=str),
            "split": np.full(n, name),
            "label": np.asarray(labels, dtype=np.int64),
            "channels": np.full(n, c, dtype=np.int64),
            "height": np.full(n, h, dtype=np.int64),
            "width": np.full(n, w, dtype=np.int64),
            "pixel_min": stats.low,
            "pixel_max": stats.high,
            "pixel_mean": stats.mean,
            "sha1": sha1,
        },
        columns=TABLE_COLUMNS[:-1],
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


def class_table(images: pd.DataFrame, splits: list[str], class_names: list[str]) -> pd.DataFrame:
    """One row per (split, class) of `splits` x `class_names`, also where the count is 0.

    id: `<split>/<class name>`; share: the class's fraction of its split;
    imbalance: the split's largest class count over this class's, NaN for an
    absent class (that is `class_coverage`'s finding, and GX skips nulls).
    Labels outside `class_names` are left out (the `label_set` check names them).
    """
    k = len(class_names)
    labels = np.arange(k, dtype=np.int64)
    rows = []
    for split in splits:
        in_split = images.loc[images["split"] == split, "label"].to_numpy(dtype=np.int64)
        counts = np.bincount(in_split[(in_split >= 0) & (in_split < k)], minlength=k)
        total = max(len(in_split), 1)
        largest = int(counts.max()) if k else 0
        rows.append(
            pd.DataFrame(
                {
                    "id": [f"{split}/{name}" for name in class_names],
                    "split": [split] * k,
                    "label": labels,
                    "count": counts.astype(np.int64),
                    "share": counts / total,
                    "imbalance": np.where(counts > 0, largest / np.maximum(counts, 1), np.nan),
                },
                columns=CLASS_COLUMNS,
            )
        )
    if not rows:
        return pd.DataFrame({c: [] for c in CLASS_COLUMNS})
    return pd.concat(rows, ignore_index=True)
