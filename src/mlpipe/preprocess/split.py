"""train -> train/val, stratified and deterministic; normalisation statistics from train only."""

from __future__ import annotations

from typing import Any

from mlpipe.dataset import ImageDataset
from mlpipe.errors import DataError
from mlpipe.ingest.stratify import stratified_split
from mlpipe.preprocess.normalize import channel_stats


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


def summary(processed: ImageDataset) -> dict[str, Any]:
    """What preprocess reports (reports/preprocess.json): split sizes and statistics."""
    return {
        "splits": {name: len(split) for name, split in processed.splits.items()},
        "normalization": processed.extra["normalization"],
        "val_fraction": processed.extra["val_fraction"],
        "split_seed": processed.extra["split_seed"],
    }
