"""train -> train/val, stratified and deterministic; normalisation statistics from train only.

`index_processed` (the stage) does it by index over shards on disk; `make_processed` the same
in memory (the tune bench)."""

from __future__ import annotations

from typing import Any

from mlpipe.dataset import ImageDataset, ShardedDataset
from mlpipe.errors import DataError
from mlpipe.ingest.stratify import stratified_indices, stratified_split
from mlpipe.preprocess.normalize import channel_stats, streamed_channel_stats


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


def index_processed(raw: ShardedDataset, val_fraction: float, seed: int) -> ShardedDataset:
    """`make_processed` by index: the same splits and statistics, no pixels copied.

    The splits keep pointing into raw's shards (train and val each a subset of raw's train
    rows); the statistics come from one streaming pass over the train rows."""
    if "train" not in raw.splits or "test" not in raw.splits:
        raise DataError(f"raw data needs 'train' and 'test' splits, found {sorted(raw.splits)}")
    everything = raw.splits["train"]
    keep, held = stratified_indices(everything.labels, val_fraction, seed)
    train = everything.take(keep)
    mean, std = streamed_channel_stats(train)
    return ShardedDataset(
        splits={"train": train, "val": everything.take(held), "test": raw.splits["test"]},
        class_names=raw.class_names,
        source=raw.source,
        extra={
            "normalization": {"mean": mean, "std": std},
            "val_fraction": val_fraction,
            "split_seed": seed,
        },
    )


def summary(processed: ImageDataset | ShardedDataset) -> dict[str, Any]:
    """What preprocess reports (reports/preprocess.json): split sizes and statistics."""
    return {
        "splits": {name: len(split) for name, split in processed.splits.items()},
        "normalization": processed.extra["normalization"],
        "val_fraction": processed.extra["val_fraction"],
        "split_seed": processed.extra["split_seed"],
    }
