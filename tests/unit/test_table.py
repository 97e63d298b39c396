import hashlib

import numpy as np
import pandas as pd
import pytest

from mlpipe.dataset import ImageDataset, ImageSplit
from mlpipe.validate.table import (
    CLASS_COLUMNS,
    TABLE_COLUMNS,
    TABLE_DTYPES,
    class_table,
    image_table,
)


def make_dataset() -> ImageDataset:
    train = np.arange(3 * 1 * 2 * 2, dtype=np.uint8).reshape(3, 1, 2, 2)  # (N, C, H, W)
    train[2] = train[0]  # a duplicate image: same hash
    test = np.full((2, 1, 2, 2), 200, dtype=np.uint8)
    test[1, 0, 1, 1] = 7
    return ImageDataset(
        splits={
            "train": ImageSplit(train, np.array([0, 1, 2], dtype=np.int64)),
            "test": ImageSplit(test, np.array([2, 0], dtype=np.int64)),
        },
        class_names=["a", "b", "c"],
        source="synthetic",
    )


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return image_table(make_dataset())


def test_one_row_per_image_in_split_order(table):
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["id"]) == [
        "train-00000000",
        "train-00000001",
        "train-00000002",
        "test-00000000",
        "test-00000001",
    ]
    assert list(table["split"]) == ["train"] * 3 + ["test"] * 2
    assert list(table["label"]) == [0, 1, 2, 2, 0]


def test_dtypes(table):
    for column in ["label", "channels", "height", "width", "pixel_min", "pixel_max"]:
        assert table[column].dtype == np.int64, column
    assert table["pixel_mean"].dtype == np.float64
    for column in ["id", "split", "sha1"]:
        assert pd.api.types.is_string_dtype(table[column]), column
    assert table["leaked"].dtype == bool
    assert {c: str(t) for c, t in table.dtypes.items()} == TABLE_DTYPES


def test_shape_and_pixel_stats(table):
    assert set(table["channels"]) == {1}
    assert set(table["height"]) == {2}
    assert set(table["width"]) == {2}
    assert list(table["pixel_min"]) == [0, 4, 0, 200, 7]
    assert list(table["pixel_max"]) == [3, 7, 3, 200, 200]
    np.testing.assert_allclose(table["pixel_mean"], [1.5, 5.5, 1.5, 200.0, 151.75])


def test_sha1_is_digest_of_image_bytes(table):
    ds = make_dataset()
    expected = [hashlib.sha1(img.tobytes()).hexdigest() for img in ds.splits["train"].images]
    assert list(table["sha1"][:3]) == expected
    assert table["sha1"][0] == table["sha1"][2]
    assert table["sha1"].nunique() == 4


def test_non_contiguous_images_hash_like_their_copy():
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5), dtype=np.uint8)
    view = images.transpose(0, 1, 3, 2)  # not C-contiguous
    labels = np.zeros(4, dtype=np.int64)
    ds_view = ImageDataset({"s": ImageSplit(view, labels)}, ["a", "b"], "x")
    ds_copy = ImageDataset({"s": ImageSplit(view.copy(), labels)}, ["a", "b"], "x")
    assert list(image_table(ds_view)["sha1"]) == list(image_table(ds_copy)["sha1"])
    assert set(image_table(ds_view)["channels"]) == {3}


def test_empty_split_gives_no_rows():
    empty = ImageSplit(np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64))
    table = image_table(ImageDataset({"val": empty}, ["a", "b"], "x"))
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 0


def test_empty_split_keeps_column_dtypes():
    empty = ImageSplit(np.zeros((0, 1, 2, 2), np.uint8), np.zeros(0, np.int64))
    ds = make_dataset()
    ds.splits = {"val": empty, **ds.splits}
    table = image_table(ds)
    assert len(table) == 5
    assert (table.dtypes == image_table(make_dataset()).dtypes).all()


def test_leaked_marks_non_train_images_identical_to_a_train_image():
    ds = make_dataset()
    ds.splits["test"].images[1] = ds.splits["train"].images[1]
    table = image_table(ds)
    assert list(table["leaked"]) == [False, False, False, False, True]
    assert not image_table(make_dataset())["leaked"].any()  # a duplicate within train is not


def test_ids_of_the_split_are_used_when_it_has_them():
    ds = make_dataset()
    ds.splits["test"].ids = np.array(["x/1.png", "y/2.png"])
    assert list(image_table(ds)["id"][3:]) == ["x/1.png", "y/2.png"]


def test_class_table_counts_every_split_and_class_also_absent_ones(table):
    classes = class_table(table, ["train", "test", "val"], ["a", "b", "c"])
    assert list(classes.columns) == CLASS_COLUMNS
    assert list(classes["id"]) == [f"{s}/{c}" for s in ["train", "test", "val"] for c in "abc"]
    assert list(classes["count"]) == [1, 1, 1, 1, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(classes["share"], [1 / 3] * 3 + [0.5, 0, 0.5] + [0] * 3)
    imbalance = classes["imbalance"].to_numpy()
    np.testing.assert_array_equal(imbalance, [1, 1, 1, 1, np.nan, 1, np.nan, np.nan, np.nan])


def test_class_table_ratio_to_the_largest_class_ignores_unknown_labels():
    images = pd.DataFrame({"split": ["train"] * 7, "label": [0, 0, 0, 0, 1, 9, -1]})
    classes = class_table(images, ["train"], ["a", "b"])
    assert list(classes["count"]) == [4, 1]
    assert list(classes["imbalance"]) == [1.0, 4.0]


def test_streamed_table_equals_the_in_memory_one_block_by_block(tmp_path, monkeypatch):
    """Read from shards (several per split, small blocks, rows out of shard order), the
    table is the same, with the hashes taken from the index, or computed where it has none."""
    from mlpipe.dataset import ShardedDataset, save_index, write_shards
    from mlpipe.validate import table as table_module
    from mlpipe.validate.table import streamed_table

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(23, 3, 5, 4), dtype=np.uint8)
    images[7] = images[2]  # a duplicate
    labels = rng.integers(0, 3, size=23)
    ds = ImageDataset(
        {
            "train": ImageSplit(images[:17], labels[:17]),
            "test": ImageSplit(images[15:], labels[15:]),
        },
        ["a", "b", "c"],
        "synthetic",
    )
    monkeypatch.setattr(table_module, "BLOCK_BYTES", 2 * 60)  # 2 images per block
    splits = {n: write_shards(tmp_path, n, s, shard_bytes=5 * 60) for n, s in ds.splits.items()}
    opened = ShardedDataset(splits, ds.class_names, ds.source)  # 5 images per shard
    save_index(opened, tmp_path)
    assert len(opened.splits["train"].shards) == 4
    order = rng.permutation(17)  # a split reading its shards' rows out of order
    opened.splits["train"] = opened.splits["train"].take(order)
    ds.splits["train"] = ImageSplit(images[:17][order], labels[:17][order])
    expected = image_table(ds)
    pd.testing.assert_frame_equal(streamed_table(opened), expected)
    assert expected["leaked"].sum() == 2  # images 15 and 16 are in both splits
    opened.splits["test"].hashes = None
    pd.testing.assert_frame_equal(streamed_table(opened), expected)
