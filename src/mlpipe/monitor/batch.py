"""The incoming images: a folder of image files, an .npz, or a folder of .npz files (what
`mlpipe serve --sample-dir` keeps), as one (N, C, H, W) array.

Anything that cannot become such an array of the model's input shape is a `BadInput`
with one line naming the problem. Pixel values are kept as read (an int16 .npz with a
300 stays 300) so that the data checks can report them; non-integer pixels are refused,
since the served model takes uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mlpipe.errors import DataError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NPZ_KEYS = ["images", "x", "arr_0"]  # the first present is the batch
MODE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 1, "I": 1}


class BadInput(DataError):
    """The batch cannot be read as the model's input."""


@dataclass
class Batch:
    images: np.ndarray  # (N, C, H, W), integer pixels as read
    ids: np.ndarray  # (N,) str: file names, or `<file>[i]`
    source: str


def load_batch(path: str | Path) -> Batch:
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    raise BadInput(f"{path}: not a folder of images or an .npz file")


def _load_folder(folder: Path) -> Batch:
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and not _hidden(p, folder)
    )
    if not files:
        npz_files = sorted(p for p in folder.glob("*.npz") if not _hidden(p, folder))
        if npz_files:  # e.g. the requests `mlpipe serve --sample-dir` kept
            return _concat([_load_npz(p) for p in npz_files], folder)
        raise BadInput(f"{folder}: no image files ({', '.join(sorted(SUFFIXES))}) or .npz files")
    arrays = [_read_image(p) for p in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(p for p, a in zip(files, arrays, strict=True) if a.shape != first)
        raise BadInput(
            f"{folder}: images of different shapes, e.g. {_chw(first)} ({files[0].name}) and "
            f"{_chw(_read_image(odd).shape)} ({odd.relative_to(folder)})"
        )
    ids = np.array([str(p.relative_to(folder)) for p in files], dtype=str)
    return Batch(np.stack(arrays), ids, str(folder))


def _concat(batches: list[Batch], folder: Path) -> Batch:
    shapes = {b.images.shape[1:] for b in batches}
    if len(shapes) > 1:
        raise BadInput(f"{folder}: .npz files of different image shapes: {sorted(shapes)}")
    images = np.concatenate([b.images for b in batches])
    return Batch(images, np.concatenate([b.ids for b in batches]), str(folder))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) pixels of one file, channels as stored (L: 1, RGB: 3, ...)."""
    try:
        with Image.open(path) as opened:
            image: Image.Image = opened
            if image.mode in ("P", "LA", "1"):  # palette, grey+alpha, bilevel
                image = image.convert("RGBA" if "transparency" in image.info else "L")
            mode, pixels = image.mode, np.asarray(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInput(f"{path}: unreadable image: {exc}") from None
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)  # (C, H, W)
    if mode not in MODE_CHANNELS:
        raise BadInput(f"{path}: image mode {mode} is not supported (L, RGB, RGBA)")
    return pixels


def _load_npz(path: Path) -> Batch:
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in NPZ_KEYS if k in npz.files), None)
            if key is None:
                raise BadInput(
                    f"{path}: no array named {' or '.join(NPZ_KEYS)} (has: "
                    f"{', '.join(npz.files) or 'nothing'})"
                )
            images = npz[key]
            ids = npz["ids"].astype(str) if "ids" in npz.files else None
    except BadInput:
        raise
    except Exception as exc:  # zipfile, pickle and OS errors
        raise BadInput(f"{path}: unreadable .npz: {exc}") from None
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4:
        raise BadInput(f"{path}: images must be (N, C, H, W) or (N, H, W), got {images.shape}")
    if len(images) == 0:
        raise BadInput(f"{path}: the batch is empty")
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(
        images.dtype, np.complexfloating
    ):
        raise BadInput(f"{path}: pixels must be numbers, got dtype {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        images = _integral(images, path)
    if ids is None or len(ids) != len(images):
        ids = np.char.add(f"{path.name}[", np.char.add(np.arange(len(images)).astype(str), "]"))
    return Batch(images, ids, str(path))


def _integral(images: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(images).all():
        raise BadInput(f"{path}: pixels must be finite, got NaN or infinity")
    if not (images == np.round(images)).all():
        sample = images[images != np.round(images)].flat[0]
        raise BadInput(
            f"{path}: pixels must be integers 0..255 (the model takes uint8), got "
            f"{images.dtype} values such as {sample:g}; scale and round them first"
        )
    return images.astype(np.int64)


def check_shape(batch: Batch, image_shape: list[int]) -> None:
    """The batch's (C, H, W) must be the model's."""
    got = list(batch.images.shape[1:])
    if got != list(image_shape):
        what = "channels" if got[0] != image_shape[0] else "image size"
        raise BadInput(
            f"{batch.source}: wrong {what}: images are {_chw(got)}, the model takes "
            f"{_chw(image_shape)} (C x H x W)"
        )


def _chw(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(int(d)) for d in shape)
