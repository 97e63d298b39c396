"""Your own images: a folder with one sub-folder per class of PNG/JPEG files.

    path/<class>/<file>                      split off data.test_fraction, stratified
    path/train/<class>/..., path/test/<class>/...   used as they are

The classes are the sorted sub-folder names (or `data.class_names`, which must
name the same folders; its order sets the label numbers). Files are decoded by
content with Pillow, converted to "L" (channels 1) or "RGB" (channels 3) and,
unless `data.resize` is false, resized to image_size x image_size (bilinear,
aspect ratio not kept). An image of more than `data.max_image_pixels` pixels
(read from its header, before decoding) stops ingest. Hidden files and folders
(".*"), link loops and links to nothing are left out, listed in meta.json
("ignored") and counted in the log and the report; a link out of `data.path`
stops ingest unless `data.follow_external_links` (see mlpipe.ingest.walk). Any
other file that is not a readable PNG or JPEG stops ingest with one line naming
it, or with `data.skip_unreadable` is skipped and listed in meta.json
("skipped"). An empty class folder, or no class folders at all, is an error; a
class folder missing from train/ or test/ is not (the validate stage reports
the class). A class folder name later stages cannot use (too long for an MLflow
metric key, a control character, the same key as another class) is an error.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlpipe.dataset import ImageDataset, ImageSplit, class_name_problem
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.stratify import stratified_split
from mlpipe.ingest.walk import Walker

log = logging.getLogger(__name__)

FORMATS = {"PNG", "JPEG"}  # Pillow's names of the formats read
SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.2
SHOWN_SKIPPED = 5  # skipped files named in the log; meta.json lists all


class Unreadable(Exception):
    """One file is not a readable PNG/JPEG; the message says why."""


@dataclass
class Reader:
    """Decodes files to (C, S, S) uint8 and keeps count of what it skipped or resized."""

    size: int
    channels: int
    resize: bool
    skip_unreadable: bool
    root: Path
    max_pixels: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    resized: int = 0

    def read(self, files: list[Path]) -> tuple[list[np.ndarray], list[str]]:
        """The images of `files` that could be read, and their ids (paths under root)."""
        images, ids = [], []
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            try:
                images.append(self.read_one(path))
            except Unreadable as exc:
                if not self.skip_unreadable:
                    raise DataError(
                        f"{path}: {exc}; fix or remove it, or set data.skip_unreadable=true "
                        "to skip such files"
                    ) from None
                self.skipped.append({"file": rel, "reason": str(exc)})
                continue
            ids.append(rel)
        return images, ids

    def read_one(self, path: Path) -> np.ndarray:
        try:
            with open_image(path) as opened:
                if opened.format not in FORMATS:
                    raise Unreadable(f"not a PNG or JPEG file ({opened.format} image)")
                self.check_pixels(opened.size, path)  # from the header: nothing decoded yet
                if self.resize and opened.format == "JPEG":
                    opened.draft(None, (self.size, self.size))  # decode at a reduced scale
                image = ImageOps.exif_transpose(opened)  # loads: decoding errors surface here
        except UnidentifiedImageError:
            raise Unreadable("not an image file (Pillow cannot identify it)") from None
        except Image.DecompressionBombError as exc:  # Pillow's own limit, above ours
            detail = " ".join(str(exc).split())
            raise DataError(
                f"{path}: more than data.max_image_pixels={self.max_pixels:,} ({detail})"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise Unreadable(f"corrupt or truncated image ({detail})") from None
        return self.conform(image, path)

    def check_pixels(self, size: tuple[int, int], path: Path) -> None:
        w, h = size
        if w * h > self.max_pixels:
            raise DataError(
                f"{path}: {w}x{h} = {w * h:,} pixels, more than data.max_image_pixels="
                f"{self.max_pixels:,}; shrink the image, or raise data.max_image_pixels"
            )

    def conform(self, image: Image.Image, path: Path) -> np.ndarray:
        if image.mode.startswith("I"):  # 16-bit greyscale PNG: keep the high byte
            image = Image.fromarray(high_byte(np.asarray(image)))
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.size, self.size):
            if not self.resize:
                w, h = image.size
                raise DataError(
                    f"{path}: {w}x{h} pixels, expected {self.size}x{self.size} "
                    "(data.image_size); set data.resize=true to resize"
                )
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
            self.resized += 1
        pixels = np.asarray(image, dtype=np.uint8)  # (S, S) or (S, S, 3)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def open_image(path: Path) -> Image.Image:
    """Read the header only; Pillow's bomb warning is left out: check_pixels decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def high_byte(pixels: np.ndarray) -> np.ndarray:
    """16-bit values to their high byte, without a wider copy for uint16 ("I;16")."""
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    return (pixels >> 8).clip(0, 255).astype(np.uint8)  # "I": int32 holding 0..65535


def load_imagefolder(cfg: DataConfig) -> ImageDataset:
    """The images under `cfg.path`, as train and test splits."""
    root = require_root(cfg.path)
    walker = Walker(root, cfg.follow_external_links)
    top = walker.folders(root)
    split_roots = find_layout(root, top)
    folders = {
        split: class_folders(folder, top if split == "all" else walker.folders(folder))
        for split, folder in split_roots.items()
    }
    class_names = resolve_class_names(cfg.class_names, folders, root)
    check_class_names(folders)
    reader = Reader(
        cfg.image_size, cfg.channels, cfg.resize, cfg.skip_unreadable, root, cfg.max_image_pixels
    )
    splits = {
        split: read_split(reader, walker, folders[split], class_names, split_roots[split])
        for split in split_roots
    }
    if sum(len(s) for s in splits.values()) == 0:
        raise DataError(f"data.path={root}: no readable images in any class folder")
    if "all" in splits:
        fraction = cfg.test_fraction or DEFAULT_TEST_FRACTION
        train, test = stratified_split(splits["all"], fraction, cfg.split_seed, where=str(root))
        splits = {"train": train, "test": test}
        layout = f"class folders, test_fraction {fraction} held out (seed {cfg.split_seed})"
    else:
        layout = "train/ and test/ class folders"
    report(reader, cfg.image_size)
    walker.report()
    extra: dict[str, Any] = {
        "layout": layout,
        "resized": reader.resized,
        "skipped": reader.skipped,
        "ignored": walker.ignored,
    }
    return ImageDataset(splits, class_names, str(root), extra)


def require_root(path: str | None) -> Path:
    if path is None:
        raise ConfigError(
            "data.path: required for data=imagefolder (a folder with one sub-folder per "
            "class of PNG/JPEG files), e.g. -S data.path=/path/to/images"
        )
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data.path={path}: missing")
    if not root.is_dir():
        raise DataError(f"data.path={path}: not a folder")
    return root


def find_layout(root: Path, top: list[Path]) -> dict[str, Path]:
    """{"train": root/train, "test": root/test} when both exist, else {"all": root}.

    `top`: the folders in root."""
    present = [s for s in SPLITS if root / s in top]
    if len(present) == 1:
        (only,) = present
        other = next(s for s in SPLITS if s != only)
        raise DataError(
            f"data.path={root}: has {only}/ but no {other}/; give both, or neither "
            "(then data.test_fraction is held out)"
        )
    if not present:
        return {"all": root}
    for extra in top:
        if extra.name not in SPLITS:
            log.warning("%s: ignored (only train/ and test/ are read)", extra)
    return {s: root / s for s in SPLITS}


def class_folders(folder: Path, subfolders: list[Path]) -> dict[str, Path]:
    found = {p.name: p for p in subfolders}
    if not found:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        hint = f" (found {len(files)} file(s) but no folders)" if files else ""
        raise DataError(
            f"{folder}: empty dataset: no class folders{hint}; expected one sub-folder "
            "per class of PNG/JPEG files"
        )
    return found


def resolve_class_names(
    configured: list[str], folders: dict[str, dict[str, Path]], root: Path
) -> list[str]:
    """The configured names if they match the folders, else the sorted folder names."""
    found = sorted({name for per_split in folders.values() for name in per_split})
    if configured:
        missing = [n for n in configured if n not in found]
        unexpected = [n for n in found if n not in configured]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"no folder for {', '.join(map(repr, missing))}")
            if unexpected:
                parts.append(f"folders not in the list: {', '.join(map(repr, unexpected))}")
            raise ConfigError(
                f"data.class_names does not match the class folders in {root}: "
                f"{'; '.join(parts)} (set data.class_names=[] to use the folder names)"
            )
        return list(configured)
    if len(found) < 2:
        raise DataError(
            f"data.path={root}: found {len(found)} class folder(s) ({', '.join(found)}); "
            "need at least two classes"
        )
    return found


def check_class_names(folders: dict[str, dict[str, Path]]) -> None:
    """Each class folder's name must fit later stages (length, characters, metric keys)."""
    paths = {name: path for per_split in folders.values() for name, path in per_split.items()}
    bad = class_name_problem(sorted(paths))
    if bad is not None:
        name, problem = bad
        shown = paths[name] if name.isprintable() else f"{paths[name].parent}/{name!r}"
        raise DataError(f"{shown}: class folder name {problem}; rename the folder")


def read_split(
    reader: Reader,
    walker: Walker,
    folders: dict[str, Path],
    class_names: list[str],
    where: Path,
) -> ImageSplit:
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    for label, name in enumerate(progress(class_names, where)):
        if name not in folders:
            log.warning("%s: no folder for class %r", where, name)
            continue
        files = image_files(walker, folders[name])
        read, read_ids = reader.read(files)
        images += read
        ids += read_ids
        labels += [label] * len(read)
    shape = (0, reader.channels, reader.size, reader.size)
    return ImageSplit(
        images=np.stack(images) if images else np.empty(shape, dtype=np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        ids=np.asarray(ids, dtype=str),
    )


def progress(class_names: list[str], where: Path) -> Any:
    from tqdm import tqdm

    return tqdm(class_names, desc=str(where), unit="class", disable=not sys.stderr.isatty())


def image_files(walker: Walker, folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (sub-folders included), sorted; none is an error."""
    files = walker.files(folder)
    if not files:
        raise DataError(f"{folder}: empty class folder (no image files)")
    return files


def report(reader: Reader, size: int) -> None:
    if reader.resized:
        log.info("resized %d image(s) to %dx%d", reader.resized, size, size)
    if reader.skipped:
        shown = "; ".join(f"{s['file']}: {s['reason']}" for s in reader.skipped[:SHOWN_SKIPPED])
        more = len(reader.skipped) - SHOWN_SKIPPED
        log.warning(
            "skipped %d unreadable file(s) (data.skip_unreadable; all listed in meta.json): %s%s",
            len(reader.skipped),
            shown,
            f"; and {more} more" if more > 0 else "",
        )
