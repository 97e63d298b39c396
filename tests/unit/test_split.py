"""Stratified split and train-only normalisation statistics."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.dataset import ImageDataset, ImageSplit
from mlpipe.errors import DataError
from mlpipe.ingest.stratify import stratified_split
from mlpipe.preprocess.normalize import channel_stats
from mlpipe.preprocess.split import make_processed


def labelled_split(counts: list[int], seed: int = 0) -> ImageSplit:
    """Images whose first pixel is a unique id, so rows can be traced through a split."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    rng = np.random.default_rng(seed)
    labels = labels[rng.permutation(len(labels))]
    n = len(labels)
    images = rng.integers(0, 256, size=(n, 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 0, 1] = np.arange(n) // 256
    return ImageSplit(images=images, labels=labels)


def ids(split: ImageSplit) -> list[int]:
    return [int(a) + 256 * int(b) for a, b in split.images[:, 0, 0, :2]]


COUNTS = [50, 30, 20, 100]


def test_keeps_class_proportions():
    data = labelled_split(COUNTS)
    train, val = stratified_split(data, 0.2, seed=1)
    val_counts = np.bincount(val.labels, minlength=len(COUNTS))
    train_counts = np.bincount(train.labels, minlength=len(COUNTS))
    for c, total in enumerate(COUNTS):
        assert abs(val_counts[c] - 0.2 * total) <= 1, (c, val_counts)
        assert train_counts[c] + val_counts[c] == total


def test_disjoint_and_complete():
    data = labelled_split(COUNTS)
    train, val = stratified_split(data, 0.25, seed=3)
    train_ids, val_ids = ids(train), ids(val)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(len(data)))
    assert len(val) == 50
    # each image keeps its own label
    by_id = dict(zip(ids(data), data.labels.tolist(), strict=True))
    for part in (train, val):
        assert [by_id[i] for i in ids(part)] == part.labels.tolist()


def test_deterministic_for_a_seed_and_different_for_another():
    data = labelled_split(COUNTS)
    first = stratified_split(data, 0.2, seed=7)
    again = stratified_split(data, 0.2, seed=7)
    other = stratified_split(data, 0.2, seed=8)
    assert ids(first[1]) == ids(again[1])
    assert np.array_equal(first[0].images, again[0].images)
    assert ids(first[1]) != ids(other[1])


def test_class_with_a_single_image_is_named():
    data = labelled_split([10, 10, 1, 10])
    with pytest.raises(DataError, match=r"train: class 2 has 1 image") as info:
        stratified_split(data, 0.2, seed=0)
    assert "at least 2" in str(info.value)


def test_split_too_small_for_fraction_is_a_data_error():
    data = labelled_split([2, 2, 2])
    with pytest.raises(DataError, match="cannot split"):
        stratified_split(data, 0.1, seed=0, where="raw/train")


def test_channel_stats_match_numpy_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 4, 6), dtype=np.uint8)
    images[:, 1] //= 4  # channels with clearly different statistics
    mean, std = channel_stats(images)
    scaled = images.astype(np.float64) / 255.0
    assert mean == pytest.approx(scaled.mean(axis=(0, 2, 3)).tolist(), rel=1e-12)
    assert std == pytest.approx(scaled.std(axis=(0, 2, 3)).tolist(), rel=1e-12)
    assert len(mean) == len(std) == 3
    assert mean[1] < mean[0]


def test_channel_stats_zero_std_becomes_one():
    images = np.zeros((3, 2, 2, 2), dtype=np.uint8)  # channel 0 all black: std exactly 0
    images[:, 1] = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)[0]
    mean, std = channel_stats(images)
    assert mean[0] == 0.0
    assert std[0] == 1.0
    assert std[1] == pytest.approx(np.std(np.arange(4) / 255.0))


@pytest.mark.parametrize("value", [51, 200])
def test_channel_stats_constant_channel_has_unit_std(value):
    images = np.full((10, 1, 28, 28), value, dtype=np.uint8)
    mean, std = channel_stats(images)
    assert mean[0] == pytest.approx(value / 255.0)
    assert std == [1.0]


def test_channel_stats_of_nothing_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        channel_stats(np.zeros((0, 1, 2, 2), dtype=np.uint8))


def raw_dataset() -> ImageDataset:
    train = labelled_split([20, 20])
    train.images[:, :, 1:] = 40  # train is dark ...
    test = ImageSplit(
        images=np.full((6, 1, 4, 4), 250, dtype=np.uint8),  # ... test is bright
        labels=np.array([0, 1, 0, 1, 0, 1], dtype=np.int64),
    )
    return ImageDataset(
        splits={"train": train, "test": test}, class_names=["dark", "light"], source="synthetic"
    )


def test_make_processed_keeps_test_and_uses_train_stats_only():
    raw = raw_dataset()
    processed = make_processed(raw, val_fraction=0.25, seed=5)
    assert sorted(processed.splits) == ["test", "train", "val"]
    assert processed.splits["test"] is raw.splits["test"]
    assert np.array_equal(processed.splits["test"].images, raw.splits["test"].images)
    train, val = stratified_split(raw.splits["train"], 0.25, 5)
    assert ids(processed.splits["train"]) == ids(train)
    assert ids(processed.splits["val"]) == ids(val)
    expected_mean, expected_std = channel_stats(train.images)
    norm = processed.extra["normalization"]
    assert norm == {"mean": expected_mean, "std": expected_std}
    # neither the whole train split nor anything including the bright test set
    assert norm["mean"] != channel_stats(raw.splits["train"].images)[0]
    assert norm["mean"][0] < 0.5
    assert processed.extra["val_fraction"] == 0.25
    assert processed.extra["split_seed"] == 5
    assert processed.class_names == raw.class_names


def test_make_processed_needs_train_and_test():
    raw = raw_dataset()
    del raw.splits["test"]
    with pytest.raises(DataError, match=r"'train' and 'test'.*\['train'\]"):
        make_processed(raw, 0.2, 0)


def test_streamed_stats_equal_channel_stats_over_shards_and_blocks(tmp_path, monkeypatch):
    from mlpipe.dataset import write_shards
    from mlpipe.preprocess import normalize

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(41, 3, 6, 5), dtype=np.uint8)
    images[:, 2] = 17  # a constant channel: std 1
    images[:, 1] = np.clip(images[:, 1], 100, 140)
    split = write_shards(tmp_path, "train", ImageSplit(images, np.zeros(41)), shard_bytes=9 * 90)
    assert len(split.shards) == 5
    monkeypatch.setattr(normalize, "BLOCK_BYTES", 4 * 90)
    order = rng.permutation(41)[:30]  # some rows, out of order: the stats of those rows
    mean, std = normalize.streamed_channel_stats(split.take(order))
    expected_mean, expected_std = channel_stats(images[order])
    assert np.allclose(mean, expected_mean, rtol=0, atol=1e-12)
    assert np.allclose(std, expected_std, rtol=0, atol=1e-12)
    assert std[2] == 1.0
    with pytest.raises(DataError, match="empty split"):
        normalize.streamed_channel_stats(split.take(np.arange(0)))


def test_index_processed_equals_make_processed_and_copies_no_pixels(tmp_path):
    from mlpipe.dataset import load_dataset, open_dataset, save_dataset, save_index
    from mlpipe.preprocess.split import index_processed

    raw = raw_dataset()
    save_dataset(raw, tmp_path / "raw")
    processed = index_processed(open_dataset(tmp_path / "raw"), val_fraction=0.25, seed=5)
    (tmp_path / "processed").mkdir()
    save_index(processed, tmp_path / "processed")
    assert not list((tmp_path / "processed").glob("*.npy"))
    meta = (tmp_path / "processed" / "meta.json").read_text()
    assert '"file": "../raw/train-00000.npy"' in meta
    loaded = load_dataset(tmp_path / "processed")
    expected = make_processed(raw, val_fraction=0.25, seed=5)
    for name, split in expected.splits.items():
        assert np.array_equal(loaded.splits[name].images, split.images), name
        assert loaded.splits[name].labels.tolist() == split.labels.tolist()
    norm, want = loaded.extra["normalization"], expected.extra["normalization"]
    assert np.allclose(norm["mean"], want["mean"], rtol=0, atol=1e-9)
    assert np.allclose(norm["std"], want["std"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", range(60))
def test_stratified_indices_pick_what_scikit_learn_picks(case):
    """The numpy-only split equals train_test_split(stratify=...) sorted: the same test
    and val splits as before it replaced scikit-learn (which costs 2 s to import)."""
    from sklearn.model_selection import train_test_split

    from mlpipe.ingest.stratify import stratified_indices

    rng = np.random.default_rng(case)
    k = int(rng.integers(2, 12))
    counts = rng.integers(2, 60, size=k)
    labels = rng.permutation(np.repeat(np.arange(k), counts))
    fraction = float(rng.choice([0.1, 0.2, 0.25, 0.33, rng.uniform(0.15, 0.6)]))
    seed = int(rng.integers(0, 1000))
    keep, held = stratified_indices(labels, fraction, seed)
    want = train_test_split(
        np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels
    )
    assert keep.tolist() == sorted(want[0]) and held.tolist() == sorted(want[1])


def test_processed_refuses_a_changed_raw_shard_by_name(tmp_path):
    """processed/ holds no pixels: a raw shard changed after preprocess stops the reader."""
    from mlpipe.dataset import load_dataset, open_dataset, save_dataset, save_index
    from mlpipe.preprocess.split import index_processed

    save_dataset(raw_dataset(), tmp_path / "raw")
    (tmp_path / "processed").mkdir()
    save_index(index_processed(open_dataset(tmp_path / "raw"), 0.25, 5), tmp_path / "processed")
    shard = tmp_path / "raw" / "train-00000.npy"
    pixels = np.load(shard)
    pixels[0, 0, 0, 0] ^= 1
    np.save(shard, pixels)
    with pytest.raises(DataError, match=r"raw/train-00000\.npy: shard content does not match"):
        load_dataset(tmp_path / "processed")
