"""The data a run used, as MLflow dataset inputs whose digests are DVC's hashes.

Each split's index (`train.index.npz`, ...) is logged with `mlflow.log_input`, its digest
the md5 DVC records for that file (the pixels' shards are named with their sha256 in the
folder's meta.json, so the folder hash covers them); every input is tagged with the
folder's DVC hash (`<md5>.dir`, as in dvc.lock), so the UI's dataset column ties a run
to a DVC version.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.numpy_dataset import from_numpy
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError
from mlpipe.tracking import store

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5()  # DVC's hash, not for security
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_dir_md5(folder: Path) -> tuple[str, dict[str, str]]:
    """DVC 3's hash of a directory output (`<md5>.dir`) and each file's md5 by relpath:
    the md5 of the sorted JSON list of {md5, relpath}, as dvc-data's Tree computes it."""
    files = {
        p.relative_to(folder).as_posix(): file_md5(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    rows = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files.items())]
    manifest = json.dumps(rows, sort_keys=True).encode("utf-8")
    return hashlib.md5(manifest).hexdigest() + ".dir", files


def log_split_inputs(folder: Path, splits: dict[str, Any], name: str) -> str:
    """Log each split (an object with .images and .labels) found as `<folder>/<split>.index.npz`
    as a dataset input of the active run, context = the split; returns the folder hash."""
    dir_md5, files = dvc_dir_md5(folder)
    try:
        for split, data in splits.items():
            rel = f"{split}.index.npz"
            if rel not in files:
                continue
            with warnings.catch_warnings():  # a local path matches two source types
                warnings.filterwarnings("ignore", "The specified dataset source can be")
                dataset = from_numpy(
                    features=data.images,
                    targets=data.labels,
                    source=str((folder / rel).resolve()),
                    name=f"{name}-{split}",
                    digest=files[rel],
                )
            mlflow.log_input(dataset, context=split, tags={"dvc_md5": dir_md5})
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {store.display_uri()}: {exc.message}") from None
    return dir_md5
