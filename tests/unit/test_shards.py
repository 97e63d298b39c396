"""The shard reader: split order, gathering by index, and refusing broken shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpipe.errors import DataError
from mlpipe.shards import Shard, ShardedSplit, file_sha256

SHAPE = (1, 2, 2)


def write_shards(folder: Path, sizes: list[int]) -> tuple[list[Shard], np.ndarray]:
    """Shards of images whose pixels are their global number; returns shards and pixels."""
    shards, pixels, start = [], [], 0
    for i, n in enumerate(sizes):
        images = np.arange(start, start + n, dtype=np.uint8)[:, None, None, None] * np.ones(
            (1, *SHAPE), dtype=np.uint8
        )
        path = folder / f"train-{i:05d}.npy"
        np.save(path, images)
        shards.append(Shard(path, n, file_sha256(path)))
        pixels.append(images)
        start += n
    return shards, np.concatenate(pixels)


def split_of(shards: list[Shard], rows: list[tuple[int, int]]) -> ShardedSplit:
    shard = np.array([s for s, _ in rows], dtype=np.int32)
    offset = np.array([o for _, o in rows], dtype=np.int32)
    return ShardedSplit(shards, SHAPE, np.zeros(len(rows), np.int64), shard, offset)


def test_load_gathers_rows_in_split_order(tmp_path: Path) -> None:
    shards, _ = write_shards(tmp_path, [3, 2])
    split = split_of(shards, [(1, 1), (0, 2), (0, 0), (1, 0)])
    assert split.load()[:, 0, 0, 0].tolist() == [4, 2, 0, 3]
    assert [(n, p.tolist()) for n, p in split.shards_in_order()] == [(0, [2, 1]), (1, [3, 0])]
    assert split.nbytes == 4 * 4


def test_changed_shard_is_refused_by_name(tmp_path: Path) -> None:
    shards, _ = write_shards(tmp_path, [3])
    arr = np.load(shards[0].path)
    arr[0] = 99
    np.save(shards[0].path, arr)
    with pytest.raises(DataError, match=r"train-00000\.npy: shard content does not match"):
        split_of(shards, [(0, 0)]).load()


def test_truncated_shard_is_refused_by_name(tmp_path: Path) -> None:
    shards, _ = write_shards(tmp_path, [3])
    data = shards[0].path.read_bytes()
    shards[0].path.write_bytes(data[:-5])
    unchecked = [Shard(shards[0].path, 3)]
    with pytest.raises(DataError, match=r"train-00000\.npy: shard unreadable"):
        split_of(unchecked, [(0, 0)]).load()


def test_wrong_shape_and_bad_index_are_refused(tmp_path: Path) -> None:
    shards, _ = write_shards(tmp_path, [3])
    with pytest.raises(DataError, match="its index says uint8"):
        split_of([Shard(shards[0].path, 4)], [(0, 0)]).load()
    with pytest.raises(DataError, match="index names shard 1 of 1"):
        split_of(shards, [(1, 0)])
