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
import multiprocessing
import os
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlpipe.dataset import ImageDataset, ShardedDataset, class_name_problem, shard_rows
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.stratify import stratified_indices
from mlpipe.ingest.walk import Walker
from mlpipe.shards import ShardedSplit, ShardWriter

log = logging.getLogger(__name__)

FORMATS = {"PNG", "JPEG"}  # Pillow's names of the formats read
SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.2
SHOWN_SKIPPED = 5  # skipped files named in the log; meta.json lists all
CHUNK_FILES = 64  # files a pool worker decodes per task: few round trips, little in flight
IN_FLIGHT = 4  # runs of files submitted ahead per worker


class Unreadable(Exception):
    """One file is not a readable PNG/JPEG; the message says why."""


@dataclass(frozen=True)
class Reader:
    """Decodes one file to (C, S, S) uint8; plain settings, so it travels to pool workers."""

    size: int
    channels: int
    resize: bool
    skip_unreadable: bool
    root: Path
    max_pixels: int

    def read_one(self, path: Path) -> tuple[np.ndarray, bool]:
        """The pixels of `path`, and whether they were resized."""
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

    def conform(self, image: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
        if image.mode.startswith("I"):  # 16-bit greyscale PNG: keep the high byte
            image = Image.fromarray(high_byte(np.asarray(image)))
        mode = "L" if self.channels == 1 else "RGB"
        if image.mode != mode:
            image = image.convert(mode)
        resized = image.size != (self.size, self.size)
        if resized:
            if not self.resize:
                w, h = image.size
                raise DataError(
                    f"{path}: {w}x{h} pixels, expected {self.size}x{self.size} "
                    "(data.image_size); set data.resize=true to resize"
                )
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)  # (S, S) or (S, S, 3)
        return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)), resized


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
    """The images under `cfg.path`, as train and test splits in memory (small folders)."""
    with tempfile.TemporaryDirectory(prefix="mlpipe-imagefolder-") as tmp:
        return write_imagefolder(cfg, Path(tmp)).load()


def write_imagefolder(cfg: DataConfig, out: Path) -> ShardedDataset:
    """The images under `cfg.path` as shards in `out`, train and test splits by index.

    Files are decoded by `data.workers` processes in file order, so the shards are the
    same bytes whatever the number of workers; memory holds one shard being filled and
    the chunks in flight."""
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
    tally = Tally()
    # the workers start before the files are listed: they do not inherit (and copy, as
    # their garbage collector touches it) a list that grows with the folder
    with Decoding(reader, resolve_workers(cfg.workers)) as decoding:
        listed = {
            split: list_split(walker, folders[split], class_names, split_roots[split])
            for split in split_roots
        }
        splits = {
            split: decoding.write(files, writer(out, split, reader), tally)
            for split, files in listed.items()
        }
    if sum(len(s) for s in splits.values()) == 0:
        raise DataError(f"data.path={root}: no readable images in any class folder")
    if "all" in splits:
        fraction = cfg.test_fraction or DEFAULT_TEST_FRACTION
        everything = splits["all"]
        keep, held = stratified_indices(everything.labels, fraction, cfg.split_seed, str(root))
        splits = {"train": everything.take(keep), "test": everything.take(held)}
        layout = f"class folders, test_fraction {fraction} held out (seed {cfg.split_seed})"
    else:
        layout = "train/ and test/ class folders"
    report(tally, cfg.image_size)
    walker.report()
    extra: dict[str, Any] = {
        "layout": layout,
        "resized": tally.resized,
        "skipped": tally.skipped,
        "ignored": walker.ignored,
    }
    return ShardedDataset(splits, class_names, str(root), extra)


def shape(reader: Reader) -> tuple[int, int, int]:
    return (reader.channels, reader.size, reader.size)


def writer(out: Path, split: str, reader: Reader) -> ShardWriter:
    return ShardWriter(out, split, shape(reader), shard_rows(shape(reader)))


def resolve_workers(workers: int) -> int:
    """data.workers, 0 meaning one per core."""
    return workers or os.cpu_count() or 1


@dataclass
class Tally:
    """What the decoding left out or changed, over every split."""

    skipped: list[dict[str, str]] = field(default_factory=list)
    resized: int = 0


@dataclass
class Chunk:
    """What a worker made of a run of files: the images read, in order, or the error."""

    images: np.ndarray  # (n, C, S, S) uint8
    read: list[int]  # positions in the chunk of the files read
    skipped: list[dict[str, str]]
    resized: int
    error: str | None = None  # the one-line DataError that stops ingest


def decode_chunk(job: tuple[Reader, list[Path]]) -> Chunk:
    """Decode a run of files (in a pool worker): stops at the first file that stops ingest."""
    reader, files = job
    images, read, skipped, resized = [], [], [], 0
    error = None
    for i, path in enumerate(files):
        try:
            pixels, was_resized = reader.read_one(path)
        except Unreadable as exc:
            if not reader.skip_unreadable:
                error = (
                    f"{path}: {exc}; fix or remove it, or set data.skip_unreadable=true "
                    "to skip such files"
                )
                break
            skipped.append({"file": path.relative_to(reader.root).as_posix(), "reason": str(exc)})
            continue
        except DataError as exc:
            error = str(exc)
            break
        images.append(pixels)
        read.append(i)
        resized += was_resized
    stacked = np.stack(images) if images else np.empty((0, *shape(reader)), dtype=np.uint8)
    return Chunk(stacked, read, skipped, resized, error)


class Decoding:
    """Files decoded in order by a pool of `workers` processes (in this one for 1)."""

    def __init__(self, reader: Reader, workers: int) -> None:
        self.reader, self.workers = reader, workers
        self.pool: Any = None

    def __enter__(self) -> Decoding:
        if self.workers > 1:
            self.pool = multiprocessing.get_context().Pool(self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def chunks(self, files: list[Path]) -> Iterator[tuple[list[Path], Chunk]]:
        """(files, what a worker made of them) per run of files, in order. At most
        IN_FLIGHT runs per worker are submitted ahead (Pool.imap would queue every
        result if the writer fell behind): memory stays bounded whatever the count."""
        runs = [files[i : i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
        if self.pool is None:
            for run in runs:
                yield run, decode_chunk((self.reader, run))
            return
        pending: deque[Any] = deque()
        for number, run in enumerate(runs):
            pending.append(self.pool.apply_async(decode_chunk, ((self.reader, run),)))
            if len(pending) >= IN_FLIGHT * self.workers:
                yield runs[number + 1 - len(pending)], pending.popleft().get()
        while pending:
            yield runs[len(runs) - len(pending)], pending.popleft().get()

    def write(self, listed: Listed, writer: ShardWriter, tally: Tally) -> ShardedSplit:
        """Decode `listed` into `writer`, in file order; the split it wrote."""
        files, labels = listed
        done = 0
        with progress(len(files), writer.name) as bar:
            for run, chunk in self.chunks(files):
                if chunk.error is not None:
                    raise DataError(chunk.error)
                ids = [run[i].relative_to(self.reader.root).as_posix() for i in chunk.read]
                writer.append(chunk.images, labels[done + np.asarray(chunk.read, int)], ids)
                tally.skipped += chunk.skipped
                tally.resized += chunk.resized
                done += len(run)
                bar.update(len(run))
        return writer.close()


Listed = tuple[list[Path], np.ndarray]  # the files of a split in order, and their labels


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


def list_split(
    walker: Walker, folders: dict[str, Path], class_names: list[str], where: Path
) -> Listed:
    """The files of a split, class by class in label order, and their labels."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        if name not in folders:
            log.warning("%s: no folder for class %r", where, name)
            continue
        found = image_files(walker, folders[name])
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def progress(total: int, what: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="image", disable=not sys.stderr.isatty())


def image_files(walker: Walker, folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (sub-folders included), sorted; none is an error."""
    files = walker.files(folder)
    if not files:
        raise DataError(f"{folder}: empty class folder (no image files)")
    return files


def report(tally: Tally, size: int) -> None:
    if tally.resized:
        log.info("resized %d image(s) to %dx%d", tally.resized, size, size)
    if tally.skipped:
        shown = "; ".join(f"{s['file']}: {s['reason']}" for s in tally.skipped[:SHOWN_SKIPPED])
        more = len(tally.skipped) - SHOWN_SKIPPED
        log.warning(
            "skipped %d unreadable file(s) (data.skip_unreadable; all listed in meta.json): %s%s",
            len(tally.skipped),
            shown,
            f"; and {more} more" if more > 0 else "",
        )
