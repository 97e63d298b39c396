"""Images on disk in fixed-size shards: reading and writing the format (numpy only).

A split is a list of shards and an index. Each shard is one `.npy` file holding a
uint8 array (n, C, H, W). A reader that goes through a shard once (validate, preprocess,
evaluate) maps it (`np.load(mmap_mode="r")`) and lets it go before the next, so it holds
one shard's pages at a time. A reader that picks rows here and there for many batches
(training's shuffled batches) reads them by position instead (`read_rows`, `RowFile`):
pages of a mapped file that a process has touched count in its memory until it unmaps
the file, so shuffled batches from maps kept open would grow it to the whole split;
positional reads hold only the batch, and the page cache, which the kernel sizes and
reclaims, holds the rest. The
index says, for each image of the split in split order, its label, the shard it is
in and its row there (`offset`), and optionally its id (e.g. the source file) and the
hash of its pixels. A split may use only some rows of a shard (preprocess takes
val out of train by index, without copying pixels).

`ShardedSplit.shards_in_order` gives, shard by shard, which rows a split reads, which
is all a streaming reader needs; `ShardedSplit.load` gathers the whole split into
memory for the stages and data sizes where that fits.

A shard whose file is missing, truncated or of the wrong shape, dtype or hash stops
the reader with a `DataError` naming the shard.

`ShardWriter` is the writing half: images appended chunk by chunk go to a one-shard
buffer that becomes `<name>-NNNNN.npy` when full, so a writer holds at most one shard
of pixels whatever the split's size; it hashes each image's pixels (SHA-1 of the
C-contiguous uint8 bytes, the index's `hashes`) on the way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpipe.errors import DataError

HASH_CHUNK = 1 << 22  # bytes hashed at a time: bounded memory over a shard of any size


@dataclass(frozen=True)
class Shard:
    path: Path
    count: int  # images in the file
    sha256: str | None = None  # of the whole .npy file; None: not checked


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_shard(shard: Shard, image_shape: tuple[int, int, int], verify: bool = True) -> np.ndarray:
    """The shard as a read-only memory map (n, C, H, W) uint8, checked against its index."""
    path = shard.path
    if verify and shard.sha256 is not None:
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise DataError(f"{path}: shard missing; rerun the stage that wrote it") from None
        if actual != shard.sha256:
            raise DataError(
                f"{path}: shard content does not match its index (sha256 {actual[:12]}..., "
                f"expected {shard.sha256[:12]}...); rerun the stage that wrote it"
            )
    try:
        array: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: shard missing; rerun the stage that wrote it") from None
    except (OSError, ValueError) as exc:  # a truncated file fails the memory map
        raise DataError(f"{path}: shard unreadable (truncated?): {exc}") from None
    expected = (shard.count, *image_shape)
    if array.dtype != np.uint8 or tuple(array.shape) != expected:
        raise DataError(
            f"{path}: shard holds {array.dtype} {tuple(array.shape)}, "
            f"its index says uint8 {expected}"
        )
    return array


class RowFile:
    """A shard's rows read by position (`os.pread`), nothing mapped: the header is checked
    (uint8, C order, the index's shape) and the size (a truncated file is refused) when
    opened. Close it, or leave it to the garbage collector."""

    def __init__(self, shard: Shard, image_shape: tuple[int, int, int]) -> None:
        path = shard.path
        try:
            self._fh = path.open("rb", buffering=0)
        except FileNotFoundError:
            raise DataError(f"{path}: shard missing; rerun the stage that wrote it") from None
        try:
            version = np.lib.format.read_magic(self._fh)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(self._fh)
            else:
                header = np.lib.format.read_array_header_2_0(self._fh)
        except ValueError as exc:
            self.close()
            raise DataError(f"{path}: shard unreadable (not a .npy file?): {exc}") from None
        shape, fortran, dtype = header
        expected = (shard.count, *image_shape)
        if dtype != np.uint8 or fortran or tuple(shape) != expected:
            self.close()
            raise DataError(
                f"{path}: shard holds {dtype} {tuple(shape)}, its index says uint8 {expected}"
            )
        self.start = self._fh.tell()
        self.row_bytes = int(np.prod(image_shape))
        size = os.fstat(self._fh.fileno()).st_size
        if size < self.start + shard.count * self.row_bytes:
            self.close()
            raise DataError(
                f"{path}: shard unreadable (truncated?): {size} bytes, its header says "
                f"{self.start + shard.count * self.row_bytes}"
            )
        self.path = path

    def read_into(self, out: np.ndarray, first_row: int) -> None:
        """Fill `out` (k, C, H, W) uint8, C-contiguous, with rows first_row .. first_row + k."""
        view = out.data.cast("B")  # C-contiguous, so one flat run of bytes
        offset, done = self.start + first_row * self.row_bytes, 0
        while done < len(view):
            got = os.preadv(self._fh.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise DataError(f"{self.path}: shard shorter than its header says (truncated?)")
            done += got

    def close(self) -> None:
        self._fh.close()


def pixel_hashes(images: np.ndarray) -> list[str]:
    """Hex SHA-1 of each image's uint8 bytes (C-contiguous), what the index's `hashes` hold."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    return [hashlib.sha1(row.data, usedforsecurity=False).hexdigest() for row in flat]


@dataclass
class ShardedSplit:
    """One split: its shards and, per image in split order, label, shard and row."""

    shards: list[Shard]
    image_shape: tuple[int, int, int]  # (C, H, W)
    labels: np.ndarray  # (N,) int64
    shard: np.ndarray  # (N,) int32: index into `shards`
    offset: np.ndarray  # (N,) int32: row in that shard
    ids: np.ndarray | None = None  # (N,) str
    hashes: np.ndarray | None = None  # (N,) str: hash of each image's pixels

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("shard", "offset", "ids", "hashes"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise DataError(f"index column {name} has {len(column)} rows, labels {n}")
        if n and (self.shard.min() < 0 or self.shard.max() >= len(self.shards)):
            raise DataError(f"index names shard {int(self.shard.max())} of {len(self.shards)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels the split holds when loaded."""
        return len(self) * int(np.prod(self.image_shape))

    def shards_in_order(self) -> Iterator[tuple[int, np.ndarray]]:
        """(shard number, positions in the split of its images, in row order) per shard used."""
        order = np.lexsort((self.offset, self.shard))
        starts = np.flatnonzero(np.diff(self.shard[order], prepend=-1))
        for block in np.split(order, starts[1:]):
            if len(block):
                yield int(self.shard[block[0]]), block

    def take(self, positions: np.ndarray) -> ShardedSplit:
        """The images at `positions` (in that order) as a split over the same shards."""

        def pick(column: np.ndarray | None) -> np.ndarray | None:
            return None if column is None else column[positions]

        return ShardedSplit(
            self.shards,
            self.image_shape,
            self.labels[positions],
            self.shard[positions],
            self.offset[positions],
            pick(self.ids),
            pick(self.hashes),
        )

    def read(self, shard_number: int, verify: bool = True) -> np.ndarray:
        return open_shard(self.shards[shard_number], self.image_shape, verify=verify)

    def read_rows(
        self, positions: np.ndarray | list[int], files: dict[int, RowFile] | None = None
    ) -> np.ndarray:
        """The images at `positions` of the split, (n, C, H, W) uint8 in that order, read by
        position a shard at a time in row order, one read per run of consecutive rows.
        `files`: shards opened before (unverified), kept across calls by a caller that reads
        many batches (and closes them)."""
        positions = np.asarray(positions, dtype=np.int64)
        files = {} if files is None else files
        out = np.empty((len(positions), *self.image_shape), dtype=np.uint8)
        shards = self.shard[positions]
        for number in np.unique(shards).tolist():
            where = np.flatnonzero(shards == number)
            rows = self.offset[positions[where]]
            by_row = np.argsort(rows, kind="stable")
            rows = rows[by_row]
            if number not in files:
                files[number] = RowFile(self.shards[number], self.image_shape)
            block = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
            starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # runs of rows r, r+1, ...
            for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(rows)], strict=True):
                files[number].read_into(block[a:b], int(rows[a]))
            out[where[by_row]] = block
        return out

    def load(self, verify: bool = True) -> np.ndarray:
        """The whole split in memory, (N, C, H, W) uint8 in split order."""
        out = np.empty((len(self), *self.image_shape), dtype=np.uint8)
        for number, positions in self.shards_in_order():
            rows = self.offset[positions]
            out[positions] = self.read(number, verify=verify)[rows]
        return out


class ShardWriter:
    """Append images to `<folder>/<name>-NNNNN.npy` shards of `rows` images each.

    Holds one shard's buffer of pixels (its pages are touched only as they fill) plus
    the index columns; `close` writes the last, partial shard and returns the split.
    """

    def __init__(
        self, folder: Path, name: str, image_shape: tuple[int, int, int], rows: int
    ) -> None:
        self.folder, self.name, self.image_shape = Path(folder), name, image_shape
        self.rows = max(1, rows)
        self.shards: list[Shard] = []
        self.labels: list[np.ndarray] = []
        self.ids: list[str] = []
        self.hashes: list[str] = []
        self.has_ids = True
        self._buffer: np.ndarray | None = None
        self._filled = 0

    def __len__(self) -> int:
        return len(self.hashes)

    def append(
        self, images: np.ndarray, labels: np.ndarray, ids: list[str] | np.ndarray | None = None
    ) -> None:
        """Add (n, C, H, W) uint8 images in order, with their labels (and ids)."""
        if images.shape[1:] != self.image_shape or images.dtype != np.uint8:
            raise DataError(
                f"{self.name}: images are {images.dtype} {tuple(images.shape[1:])}, "
                f"the split's are uint8 {self.image_shape}"
            )
        if len(labels) != len(images) or (ids is not None and len(ids) != len(images)):
            raise DataError(f"{self.name}: {len(images)} images but {len(labels)} labels")
        self.labels.append(np.asarray(labels, dtype=np.int64))
        self.hashes += pixel_hashes(images)
        if ids is None:
            self.has_ids = False
        else:
            self.ids += [str(i) for i in ids]
        start = 0
        while start < len(images):
            buffer = self._ensure_buffer()
            take = min(self.rows - self._filled, len(images) - start)
            buffer[self._filled : self._filled + take] = images[start : start + take]
            self._filled += take
            start += take
            if self._filled == self.rows:
                self._flush()

    def close(self) -> ShardedSplit:
        """Write what is buffered (an empty split gets one empty shard) and give the split."""
        if self._filled or not self.shards:
            self._flush()
        self._buffer = None
        n = len(self.hashes)
        labels = np.concatenate(self.labels) if self.labels else np.empty(0, np.int64)
        return ShardedSplit(
            shards=list(self.shards),
            image_shape=self.image_shape,
            labels=labels,
            shard=(np.arange(n) // self.rows).astype(np.int32),
            offset=(np.arange(n) % self.rows).astype(np.int32),
            ids=np.asarray(self.ids, dtype=str) if self.has_ids else None,
            hashes=np.asarray(self.hashes, dtype=str),
        )

    def _ensure_buffer(self) -> np.ndarray:
        if self._buffer is None:
            self._buffer = np.empty((self.rows, *self.image_shape), dtype=np.uint8)
        return self._buffer

    def _flush(self) -> None:
        path = self.folder / f"{self.name}-{len(self.shards):05d}.npy"
        buffer = self._ensure_buffer()
        np.save(path, buffer[: self._filled])
        self.shards.append(Shard(path, self._filled, file_sha256(path)))
        self._filled = 0
