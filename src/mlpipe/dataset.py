"""The on-disk contract between stages: a folder of named splits.

A dataset folder (data/raw, data/processed) holds one `<split>.npz` per split,
each with `images` (N, C, H, W) uint8 and `labels` (N,) int64 (and, for image
folders, `ids` (N,) str: each image's file path), plus `meta.json` with the
class names, the source and the split names. Every source writes this,
so validation, preprocessing and training never care where images came from.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.errors import DataError
from mlpipe.io import atomic_dir

META_FILE = "meta.json"

# Class names become MLflow metric keys: evaluate logs test_{precision,recall,f1}_<key>
# (mlpipe.evaluate.metrics.flat_metrics), and MLflow keys hold at most 250 characters.
METRIC_KEY_LIMIT = 250
CLASS_METRIC_PREFIXES = ("test_precision_", "test_recall_", "test_f1_")
MAX_CLASS_NAME_LENGTH = METRIC_KEY_LIMIT - max(map(len, CLASS_METRIC_PREFIXES))  # 235


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


def class_key(name: str) -> str:
    """A class name as an MLflow metric-key fragment ("T-shirt/top" -> "T-shirt_top").

    Keeps letters and digits of any script, "_", "-" and "."; every other run of
    characters (also "/", " " and ":", which MLflow would take) becomes one "_". Never
    longer than a non-empty `name`.
    """
    return re.sub(r"[^\w\-.]+", "_", name).strip("_") or "class"


def class_name_problem(names: list[str]) -> tuple[str, str] | None:
    """The first class name later stages cannot use, and why; None when all fit."""
    keys: dict[str, str] = {}
    for name in names:
        if not name.isprintable():
            return name, "has a control character"
        if len(name) > MAX_CLASS_NAME_LENGTH:
            return name, (
                f"is {len(name)} characters long, at most {MAX_CLASS_NAME_LENGTH} fit "
                f"(evaluate logs the MLflow metric {CLASS_METRIC_PREFIXES[0]}<class>, and "
                f"MLflow keys hold at most {METRIC_KEY_LIMIT} characters)"
            )
        key = class_key(name)
        if key in keys:
            return name, (
                f"gives the same MLflow metric key as {keys[key]!r} "
                f"(test_recall_{key}: evaluate keeps letters, digits, _ - . and turns the "
                "rest into _)"
            )
        keys[key] = name
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
