"""Read and write IDX files, the format of MNIST and Fashion-MNIST, plain or gzip.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the values row-major.
A name ending in `.gz` means gzip-compressed. Every problem is a `DataError`
with one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from mlpipe.dataset import ImageSplit
from mlpipe.errors import DataError
from mlpipe.io import atomic_write_bytes

IMAGES_MAGIC = 0x00000803  # uint8, 3-D (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1-D (N,)
_EXPECTED_MAGIC = f"expected 0x{IMAGES_MAGIC:08x} for images or 0x{LABELS_MAGIC:08x} for labels"
_GZIP_MAGIC = b"\x1f\x8b"
# Fashion-MNIST: split -> (images file, labels file), names without `.gz`
FASHION_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The format allows 255 dimensions; image data needs at most 4, and a larger
# byte is far likelier a file that is not IDX at all.
_MAX_NDIM = 4
_CHUNK = 1 << 20

# IDX dtype code -> big-endian numpy dtype
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def is_gzip_name(path: Path) -> bool:
    return path.suffix == ".gz"


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[BinaryIO]:
    """Open `path` (gunzipping `.gz`) and turn every read failure into one DataError."""
    try:
        with gzip.open(path, "rb") if is_gzip_name(path) else open(path, "rb") as fh:
            yield cast(BinaryIO, fh)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an IDX file") from None
    except gzip.BadGzipFile as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream (the file was cut short)") from None
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_bytes(path: str | Path) -> bytes:
    """The whole (decompressed) content of `path`."""
    path = Path(path)
    with _reading(path) as fh:
        return fh.read()


def md5_of_content(path: str | Path) -> str:
    """MD5 hex digest of the decompressed bytes of `path`, read in chunks."""
    path = Path(path)
    digest = hashlib.md5(usedforsecurity=False)
    with _reading(path) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(magic: int, data: bytes) -> str:
    hint = ""
    if data[:2] == _GZIP_MAGIC:
        hint = "; the content looks gzip-compressed, so name the file *.gz"
    return f"wrong magic number 0x{magic:08x} ({_EXPECTED_MAGIC}{hint})"


def _parse_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return (dtype, dims, header length) or raise naming the problem."""
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    zeros, code, ndim = data[0:2], data[2], data[3]
    if zeros != b"\0\0" or code not in _DTYPES or not 1 <= ndim <= _MAX_NDIM:
        raise DataError(f"{path}: {_describe(magic, data)}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"found {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    return _DTYPES[code], dims, header_len


def parse_idx(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file; `path` only names it in messages."""
    path = Path(path)
    dtype, dims, header_len = _parse_header(path, data)
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        problem = "truncated" if found < expected else "too long"
        shape = "x".join(map(str, dims))
        raise DataError(f"{path}: {problem}: header says {shape} = {expected} bytes, found {found}")
    values = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return values.astype(dtype.newbyteorder("="))  # native order, writable copy


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (`.gz` or plain) into an array of its declared shape."""
    return parse_idx(read_bytes(path), path)


def _require(array: np.ndarray, path: str | Path, ndim: int, what: str) -> None:
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer):
        magic = IMAGES_MAGIC if ndim == 3 else LABELS_MAGIC
        raise DataError(
            f"{path}: expected {what} ({ndim}-D integers, magic 0x{magic:08x}), "
            f"found {array.ndim}-D {array.dtype} with shape {array.shape}"
        )


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> ImageSplit:
    """Read matching image and label files into a split: (N, 1, H, W) uint8, (N,) int64."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _require(images, images_path, 3, "images")
    _require(labels, labels_path, 1, "labels")
    if images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 pixels, found {images.dtype}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels: counts must match"
        )
    return ImageSplit(images=images[:, None, :, :], labels=labels.astype(np.int64))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of `array` (uncompressed)."""
    codes = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = codes[native]
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as IDX, gzip-compressed when the name ends in `.gz`; atomic."""
    path = Path(path)
    data = encode_idx(array)
    if is_gzip_name(path):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
