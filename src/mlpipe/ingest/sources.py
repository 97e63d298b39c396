"""Image sources named by `data.source`, each turned into an `ImageDataset`.

fashion_mnist: the four official IDX files, found in `data.path`, else the
Debian package dataset-fashion-mnist (`data.debian_dir`), else downloaded from
`data.urls` into a cache folder. digits: scikit-learn's bundled 8x8 digits,
upsampled; offline and tiny, for tests and demos. imagefolder: your own PNG/JPEG
files, one sub-folder per class (see mlpipe.ingest.imagefolder).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlpipe.dataset import ImageDataset, ImageSplit, ShardedDataset, write_shards
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest.config import DataConfig, DataSource
from mlpipe.ingest.idx import FASHION_SPLITS, md5_of_content, read_idx_pair
from mlpipe.ingest.imagefolder import load_imagefolder, write_imagefolder
from mlpipe.ingest.stratify import stratified_split
from mlpipe.ingest.walk import ignored_counts
from mlpipe.io import atomic_path

log = logging.getLogger(__name__)

FASHION_HOME = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_CLASS_COUNT = 10
FASHION_FILES = [name for pair in FASHION_SPLITS.values() for name in pair]
# MD5 of the published .gz files (what the download serves)
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
# MD5 of the decompressed content: the same whoever compressed it (Debian recompresses)
FASHION_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DOWNLOAD_TIMEOUT_S = 30
_CHUNK = 1 << 20


def load_source(cfg: DataConfig) -> ImageDataset:
    """Load the dataset that `cfg.source` names."""
    loaders: dict[DataSource, Callable[[DataConfig], ImageDataset]] = {
        DataSource.fashion_mnist: load_fashion_mnist,
        DataSource.digits: load_digits,
        DataSource.imagefolder: load_imagefolder,
    }
    return loaders[DataSource(cfg.source)](cfg)


def write_source(cfg: DataConfig, out: Path) -> ShardedDataset:
    """The dataset that `cfg.source` names, as shards in `out` (an empty folder).

    Image folders stream through a pool of decoders; the other sources are small enough
    to decode whole and write in one go."""
    if DataSource(cfg.source) is DataSource.imagefolder:
        return write_imagefolder(cfg, out)
    dataset = load_source(cfg)
    splits = {name: write_shards(out, name, split) for name, split in dataset.splits.items()}
    return ShardedDataset(splits, dataset.class_names, dataset.source, dataset.extra)


def summary(dataset: ImageDataset | ShardedDataset) -> dict[str, Any]:
    """What ingest reports (reports/ingest.json): counts, shape, classes, source."""
    report = {
        "source": dataset.source,
        "splits": {name: len(split) for name, split in dataset.splits.items()},
        "image_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "skipped": len(dataset.extra.get("skipped", [])),
    }
    if "ignored" in dataset.extra:  # image folders: entries left out of the walk, per reason
        report["ignored"] = ignored_counts(dataset.extra["ignored"])
    return report


# --- shared ---------------------------------------------------------------


def conform_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, 1, H, W) uint8 -> (N, channels, size, size) uint8: bilinear resize, replicate."""
    if images.shape[2:] != (size, size):
        resized = np.empty((len(images), 1, size, size), dtype=np.uint8)
        for i, image in enumerate(images[:, 0]):
            resized[i, 0] = _resize(image, size)
        images = resized
    if channels != images.shape[1]:
        images = np.repeat(images, channels, axis=1)
    return images


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))


def check_labels(split: ImageSplit, class_names: list[str], where: str) -> None:
    """Every label must index `class_names`."""
    if len(split) == 0:
        return
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= len(class_names):
        raise DataError(
            f"{where}: labels span {low}..{high} but data.class_names has "
            f"{len(class_names)} names (labels must be in 0..{len(class_names) - 1})"
        )


# --- Fashion-MNIST --------------------------------------------------------


def load_fashion_mnist(cfg: DataConfig) -> ImageDataset:
    """The official 60,000/10,000 split, from the first location that has it."""
    if len(cfg.class_names) != FASHION_CLASS_COUNT:
        raise ConfigError(
            f"data.class_names: Fashion-MNIST has {FASHION_CLASS_COUNT} classes, "
            f"got {len(cfg.class_names)} names"
        )
    files, origin = find_fashion_mnist(cfg)
    log.info("Fashion-MNIST: using %s", origin)
    if cfg.verify_checksums:
        verify_content(files, FASHION_CONTENT_MD5)
    splits = {}
    for split, (images, labels) in FASHION_SPLITS.items():
        data = read_idx_pair(files[images], files[labels])
        check_labels(data, cfg.class_names, str(files[labels]))
        splits[split] = ImageSplit(
            conform_images(data.images, cfg.image_size, cfg.channels), data.labels
        )
    return ImageDataset(splits, list(cfg.class_names), origin)


def find_fashion_mnist(cfg: DataConfig) -> tuple[dict[str, Path], str]:
    """The four files (name -> path) and where they came from, in resolution order."""
    if cfg.path is not None:
        folder = Path(cfg.path).expanduser()
        files, problem = find_files(folder, FASHION_FILES)
        if files is None:
            raise DataError(
                f"data.path={cfg.path}: {problem}; it must hold the four Fashion-MNIST "
                f"files ({', '.join(FASHION_FILES)}), each .gz or uncompressed"
            )
        return files, str(folder)
    tried = ["data.path (unset)"]
    if cfg.debian_dir:
        files, problem = find_files(Path(cfg.debian_dir), FASHION_FILES)
        if files is not None:
            return files, cfg.debian_dir
        tried.append(f"{cfg.debian_dir} ({problem})")
    else:
        tried.append("data.debian_dir (unset)")
    for url in cfg.urls:
        try:
            return download_fashion_mnist(url, cache_dir()), url
        except _DownloadFailed as exc:
            tried.append(f"download from {url} ({exc})")
    if not cfg.urls:
        tried.append("download (data.urls is empty)")
    raise DataError(_not_found_message(tried))


def _not_found_message(tried: list[str]) -> str:
    return (
        f"Fashion-MNIST not found: tried {', '.join(tried)}. Install it with "
        "`sudo apt-get install dataset-fashion-mnist`, or download the four .gz files "
        f"from {FASHION_HOME} and set data.path=/that/folder"
    )


def find_files(folder: Path, names: list[str]) -> tuple[dict[str, Path] | None, str]:
    """Map each name to `folder/name` or `folder/name.gz`; else (None, what is wrong)."""
    if not folder.exists():
        return None, "missing"
    if not folder.is_dir():
        return None, "not a folder"
    found = {}
    for name in names:
        candidates = [folder / name, folder / f"{name}.gz"]
        present = [p for p in candidates if p.is_file()]
        if not present:
            return None, f"incomplete: no {name} or {name}.gz"
        found[name] = present[0]
    return found, ""


def verify_content(files: dict[str, Path], expected: dict[str, str]) -> None:
    """Compare the MD5 of each file's decompressed content with the published one."""
    for name, path in files.items():
        actual = md5_of_content(path)
        if actual != expected[name]:
            raise DataError(
                f"{path}: MD5 of the decompressed content is {actual}, expected "
                f"{expected[name]} (corrupt or not the official file; "
                "set data.verify_checksums=false to use it anyway)"
            )
        log.debug("%s: checksum OK", path)


def cache_dir() -> Path:
    """Where downloads go: $MLPIPE_CACHE, else ~/.cache/mlpipe/fashion-mnist."""
    root = os.environ.get("MLPIPE_CACHE")
    if root:
        return Path(root).expanduser()
    return Path.home() / ".cache" / "mlpipe" / "fashion-mnist"


class _DownloadFailed(Exception):
    """One mirror did not work; the message is the reason, for the final summary."""


def download_fashion_mnist(base_url: str, cache: Path) -> dict[str, Path]:
    """Fetch the four .gz files from `base_url` into `cache` (reusing good copies)."""
    files = {}
    for name in FASHION_FILES:
        url = f"{base_url.rstrip('/')}/{name}.gz"
        files[name] = fetch(url, cache / f"{name}.gz", FASHION_GZ_MD5[name])
    return files


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download `url` to `dest` atomically unless a copy with this MD5 is there."""
    if dest.is_file() and _md5_file(dest) == md5:
        log.info("%s: cached copy OK", dest)
        return dest
    log.info("downloading %s -> %s", url, dest)
    try:
        with atomic_path(dest) as tmp:
            actual = _stream(url, tmp)
            if actual != md5:
                raise _DownloadFailed(f"{dest.name}: MD5 {actual}, expected {md5}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _DownloadFailed(_reason(exc)) from None
    return dest


def _stream(url: str, dest: Path) -> str:
    """Copy `url` into `dest` in chunks; return the MD5 of what was written."""
    from tqdm import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, dest.open("wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, disable=not sys.stderr.isatty())
        with bar:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    return getattr(exc, "strerror", None) or str(exc)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- scikit-learn digits --------------------------------------------------


def load_digits(cfg: DataConfig) -> ImageDataset:
    """1,797 8x8 digits scaled to 0..255, resized, split stratified by `test_fraction`."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only here

    bunch = sklearn_digits()
    pixels = np.rint(bunch.images * 255 / 16).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    images = conform_images(pixels[:, None], cfg.image_size, cfg.channels)
    labels = bunch.target.astype(np.int64)
    everything = ImageSplit(images, labels)
    check_labels(everything, cfg.class_names, "digits")
    fraction = cfg.test_fraction or 0.2
    train, test = stratified_split(everything, fraction, cfg.split_seed, where="digits")
    return ImageDataset(
        {"train": train, "test": test}, list(cfg.class_names), "sklearn.datasets.load_digits"
    )
