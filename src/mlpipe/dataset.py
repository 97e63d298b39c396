"""The on-disk contract between stages: a folder of named splits, stored in shards.

A dataset folder (data/raw, data/processed) holds `meta.json` (class names, source,
image shape, split sizes, and each split's shards) and, per split, `<split>.index.npz`
with `labels` (N,) int64, `shard` and `offset` (N,) int32 (where each image's pixels
are) and optionally `ids` (N,) str (e.g. the file each image came from) and `hashes`
(N,) str (of each image's pixels). Pixels live in uint8 shards (n, C, H, W) `.npy`,
read with memory mapping (mlpipe.shards). A shard's path in meta.json is relative to
the folder and may point into another dataset folder (preprocess takes val out of
train by index, without copying pixels). Every source writes this, so validation,
preprocessing and training never care where images came from.

`open_dataset` gives the splits as `ShardedSplit`s (streaming, bounded memory);
`load_dataset` gathers them into memory as `ImageSplit`s where that fits.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.errors import DataError
from mlpipe.io import atomic_dir
from mlpipe.shards import Shard, ShardedSplit, ShardWriter

META_FILE = "meta.json"
FORMAT = "mlpipe-shards/1"
SHARD_BYTES = 64 * 2**20  # pixels per shard file: a bounded read, few files for small sets


@dataclass
class ImageSplit:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray | None = None  # (N,) str, e.g. the file each image came from

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be (N, C, H, W), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DataError(
                f"{len(self.images)} images but {len(self.labels)} labels: counts must match"
            )
        if self.ids is not None and len(self.ids) != len(self.labels):
            raise DataError(f"{len(self.ids)} ids but {len(self.labels)} labels: counts must match")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    splits: dict[str, ImageSplit]
    class_names: list[str]
    source: str  # where it came from, for humans (a path, a URL, a package)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. normalisation stats

    @property
    def image_shape(self) -> tuple[int, int, int]:
        first = next(iter(self.splits.values()))
        c, h, w = first.images.shape[1:]
        return int(c), int(h), int(w)

    def meta(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "class_names": list(self.class_names),
            "splits": {name: len(s) for name, s in self.splits.items()},
            "image_shape": list(self.image_shape),
            **self.extra,
        }


def class_name_problem(names: list[str]) -> tuple[str, str] | None:
    """The first class name later stages cannot use, and why; None when all fit.

    Class names are table cells, CSV fields and plot labels, never MLflow metric keys
    (evaluate logs per-class figures as one table), so only control characters are out.
    """
    for name in names:
        if not name.isprintable():
            return name, "has a control character"
    return None


def shard_rows(image_shape: tuple[int, int, int], shard_bytes: int = SHARD_BYTES) -> int:
    """Images per shard: as many as fit in `shard_bytes`, at least one."""
    return max(1, shard_bytes // int(np.prod(image_shape)))


def index_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.index.npz"


def write_index(folder: Path, name: str, split: ShardedSplit) -> None:
    columns: dict[str, np.ndarray] = {
        "labels": np.asarray(split.labels, dtype=np.int64),
        "shard": np.asarray(split.shard, dtype=np.int32),
        "offset": np.asarray(split.offset, dtype=np.int32),
    }
    if split.ids is not None:
        columns["ids"] = np.asarray(split.ids, dtype=str)
    if split.hashes is not None:
        columns["hashes"] = np.asarray(split.hashes, dtype=str)
    np.savez(index_path(folder, name), **columns)  # type: ignore[arg-type]


def shard_entries(folder: Path, split: ShardedSplit) -> list[dict[str, Any]]:
    """meta.json's list of a split's shards, paths relative to `folder`."""
    return [
        {
            "file": Path(os.path.relpath(s.path, folder)).as_posix(),
            "count": s.count,
            "sha256": s.sha256,
        }
        for s in split.shards
    ]


def write_shards(
    tmp: Path, name: str, split: ImageSplit, shard_bytes: int = SHARD_BYTES
) -> ShardedSplit:
    """Write an in-memory split as shards of `tmp` and return it as a ShardedSplit."""
    shape = tuple(int(d) for d in split.images.shape[1:])
    writer = ShardWriter(tmp, name, shape, shard_rows(shape, shard_bytes))  # type: ignore[arg-type]
    writer.append(np.asarray(split.images, dtype=np.uint8), split.labels, split.ids)
    return writer.close()


def save_dataset(dataset: ImageDataset, out_dir: str | Path) -> None:
    """Write the whole folder atomically: it appears complete or not at all."""
    with atomic_dir(out_dir) as tmp:
        sharded = {name: write_shards(tmp, name, split) for name, split in dataset.splits.items()}
        save_index(ShardedDataset(sharded, dataset.class_names, dataset.source, dataset.extra), tmp)


def save_index(dataset: ShardedDataset, folder: Path) -> None:
    """meta.json and the split indexes of `dataset`, whose shards exist already."""
    for name, split in dataset.splits.items():
        write_index(folder, name, split)
    meta = dataset.meta()
    meta["shards"] = {name: shard_entries(folder, s) for name, s in dataset.splits.items()}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


@dataclass
class ShardedDataset:
    splits: dict[str, ShardedSplit]
    class_names: list[str]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return next(iter(self.splits.values())).image_shape

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "class_names": list(self.class_names),
            "splits": {name: len(s) for name, s in self.splits.items()},
            "image_shape": list(self.image_shape),
            **self.extra,
        }

    def load(self, verify: bool = True) -> ImageDataset:
        splits = {
            name: ImageSplit(s.load(verify=verify), s.labels, s.ids)
            for name, s in self.splits.items()
        }
        return ImageDataset(splits, self.class_names, self.source, self.extra)


def read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{meta_path}: missing; run the stage that writes {folder}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: unreadable: {exc}") from None
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}; rerun the stage "
            f"that writes {folder} (dvc repro -f <stage>)"
        )
    return dict(meta)


def open_dataset(folder: str | Path) -> ShardedDataset:
    """The dataset's index and shard list; pixels stay on disk until a split is read."""
    folder = Path(folder)
    meta = read_meta(folder)
    shape = tuple(int(d) for d in meta["image_shape"])
    splits = {}
    for name in meta["splits"]:
        shards = [
            Shard(folder / e["file"], int(e["count"]), e.get("sha256"))
            for e in meta["shards"][name]
        ]
        splits[name] = _open_split(index_path(folder, name), shards, shape)  # type: ignore[arg-type]
    known = {"format", "source", "class_names", "splits", "image_shape", "shards"}
    extra = {k: v for k, v in meta.items() if k not in known}
    return ShardedDataset(splits, list(meta["class_names"]), meta["source"], extra)


def load_dataset(folder: str | Path) -> ImageDataset:
    """The whole dataset in memory (verified shards)."""
    return open_dataset(folder).load()


def _open_split(path: Path, shards: list[Shard], shape: tuple[int, int, int]) -> ShardedSplit:
    try:
        with np.load(path, allow_pickle=False) as npz:
            optional = {k: npz[k] if k in npz.files else None for k in ("ids", "hashes")}
            return ShardedSplit(
                shards, shape, npz["labels"], npz["shard"], npz["offset"], **optional
            )
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None
