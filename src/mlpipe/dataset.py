"""The on-disk contract between stages: a folder of named splits.

A dataset folder (data/raw, data/processed) holds one `<split>.npz` per split,
each with `images` (N, C, H, W) uint8 and `labels` (N,) int64 (and, for image
folders, `ids` (N,) str: each image's file path), plus `meta.json` with the
class names, the source and the split names. Every source writes this,
so validation, preprocessing and training never care where images came from.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.errors import DataError
from mlpipe.io import atomic_dir

META_FILE = "meta.json"


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


def save_dataset(dataset: ImageDataset, out_dir: str | Path) -> None:
    """Write the whole folder atomically: it appears complete or not at all."""
    with atomic_dir(out_dir) as tmp:
        for name, split in dataset.splits.items():
            images = np.ascontiguousarray(split.images, dtype=np.uint8)
            labels = np.asarray(split.labels, dtype=np.int64)
            if split.ids is None:
                np.savez(tmp / f"{name}.npz", images=images, labels=labels)
            else:
                ids = np.asarray(split.ids, dtype=str)
                np.savez(tmp / f"{name}.npz", images=images, labels=labels, ids=ids)
        (tmp / META_FILE).write_text(json.dumps(dataset.meta(), indent=2) + "\n")


def load_dataset(folder: str | Path) -> ImageDataset:
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{meta_path}: missing; run the stage that writes {folder}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: unreadable: {exc}") from None
    splits = {name: _load_split(folder / f"{name}.npz") for name in meta["splits"]}
    known = {"source", "class_names", "splits", "image_shape"}
    extra = {k: v for k, v in meta.items() if k not in known}
    return ImageDataset(splits, list(meta["class_names"]), meta["source"], extra)


def _load_split(path: Path) -> ImageSplit:
    try:
        with np.load(path) as npz:
            ids = npz["ids"] if "ids" in npz.files else None
            return ImageSplit(images=npz["images"], labels=npz["labels"], ids=ids)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None
