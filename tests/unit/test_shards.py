"""The shard reader: split order, gathering by index, and refusing broken shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mlpipe.dataset import ImageDataset, ImageSplit, open_dataset, save_dataset, shard_rows
from mlpipe.errors import DataError
from mlpipe.shards import (
    RowFile,
    Shard,
    ShardedSplit,
    ShardWriter,
    file_sha256,
    pixel_hashes,
)

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


def test_read_rows_gives_any_positions_in_order_with_repeats_and_runs(tmp_path: Path) -> None:
    shards, pixels = write_shards(tmp_path, [5, 4, 6])
    rng = np.random.default_rng(0)
    rows = [(s, o) for s, n in enumerate([5, 4, 6]) for o in range(n)]
    perm = rng.permutation(len(rows))
    split = split_of(shards, [rows[i] for i in perm])
    files: dict[int, RowFile] = {}
    whole = split.load()
    assert np.array_equal(whole, pixels[perm])
    for positions in ([0], [3, 3, 1], list(range(len(split))), rng.permutation(15)[:7]):
        assert np.array_equal(split.read_rows(positions, files), whole[positions])
    assert sorted(files) == [0, 1, 2]  # opened once each, kept for the next call
    assert split.read_rows([]).shape == (0, *SHAPE)
    for file in files.values():
        file.close()


def test_read_rows_refuses_missing_truncated_and_reshaped_shards_by_name(tmp_path: Path) -> None:
    shards, _ = write_shards(tmp_path, [3])
    with pytest.raises(DataError, match="its index says uint8"):
        split_of([Shard(shards[0].path, 4)], [(0, 0)]).read_rows([0])
    shards[0].path.write_bytes(shards[0].path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-00000\.npy: shard unreadable \(truncated\?\)"):
        split_of(shards, [(0, 0)]).read_rows([0])
    shards[0].path.write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"train-00000\.npy: shard unreadable"):
        split_of(shards, [(0, 0)]).read_rows([0])
    shards[0].path.unlink()
    with pytest.raises(DataError, match=r"train-00000\.npy: shard missing"):
        split_of(shards, [(0, 0)]).read_rows([0])


def rss_file_kb() -> int:
    """This process's resident pages of mapped files (kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_shuffled_reads_do_not_keep_the_shards_pages_in_the_process(tmp_path: Path) -> None:
    """Training reads shuffled batches for a whole epoch: with the shards kept memory mapped,
    every page it touched stayed in its memory (the whole split by the end)."""
    shape = (3, 64, 64)
    n = 2048  # 24 MiB of pixels in two shards
    images = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    shards = []
    for i, part in enumerate(np.split(images, 2)):
        path = tmp_path / f"train-{i:05d}.npy"
        np.save(path, part)
        shards.append(Shard(path, len(part)))
    split = ShardedSplit(
        shards,
        shape,
        np.zeros(n, np.int64),
        np.repeat(np.arange(2, dtype=np.int32), n // 2),
        np.tile(np.arange(n // 2, dtype=np.int32), 2),
    )
    del images
    files: dict[int, RowFile] = {}
    before = rss_file_kb()
    order = np.random.default_rng(1).permutation(n)
    for start in range(0, n, 64):
        batch = split.read_rows(order[start : start + 64], files)
        assert batch.shape == (len(order[start : start + 64]), *shape)
    grown_mb = (rss_file_kb() - before) / 1024
    assert grown_mb < 4, f"mapped pages grew by {grown_mb:.0f} MB over 24 MB of shards"


def test_writer_appends_chunks_into_fixed_size_shards_with_pixel_hashes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(11, *SHAPE), dtype=np.uint8)
    labels = np.arange(11) % 3
    writer = ShardWriter(tmp_path, "train", SHAPE, rows=4)
    for start, stop in [(0, 3), (3, 3), (3, 9), (9, 11)]:  # chunks across shard edges
        writer.append(images[start:stop], labels[start:stop], [f"f{i}" for i in range(start, stop)])
    split = writer.close()
    assert [s.count for s in split.shards] == [4, 4, 3]
    assert [s.path.name for s in split.shards] == [f"train-0000{i}.npy" for i in range(3)]
    assert np.array_equal(split.load(), images)
    assert split.labels.tolist() == labels.tolist()
    assert split.ids is not None and split.ids.tolist() == [f"f{i}" for i in range(11)]
    assert split.hashes is not None
    assert split.hashes.tolist() == [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
    assert split.hashes.tolist() == pixel_hashes(images)


def test_writer_of_nothing_gives_one_empty_shard_and_refuses_other_shapes(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, "test", SHAPE, rows=4)
    with pytest.raises(DataError, match=r"test: images are uint8 \(1, 3, 2\)"):
        writer.append(np.zeros((1, 1, 3, 2), np.uint8), np.zeros(1))
    split = writer.close()
    assert len(split) == 0 and [s.count for s in split.shards] == [0]
    assert split.load().shape == (0, *SHAPE)


def test_save_dataset_writes_the_same_bytes_as_chunked_appends(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, *SHAPE), dtype=np.uint8)
    split = ImageSplit(images, np.arange(7) % 2)
    save_dataset(ImageDataset({"train": split}, ["a", "b"], "test"), tmp_path / "ds")
    opened = open_dataset(tmp_path / "ds").splits["train"]
    assert opened.hashes is not None and opened.hashes.tolist() == pixel_hashes(images)
    writer = ShardWriter(tmp_path, "train", SHAPE, rows=shard_rows(SHAPE))
    for i in range(7):
        writer.append(images[i : i + 1], split.labels[i : i + 1])
    chunked = writer.close()
    assert chunked.shards[0].sha256 == opened.shards[0].sha256
