"""IDX reader: round trips, and one clear message per kind of broken file."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from mlpipe.errors import DataError
from mlpipe.ingest.idx import encode_idx, md5_of_content, read_idx, read_idx_pair, write_idx


def images(n: int = 5, h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def labels(n: int = 5) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def error_of(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_images(tmp_path: Path, name: str) -> None:
    array = images()
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float32", "float64"])
def test_round_trip_other_dtypes(tmp_path: Path, dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype)
    write_idx(tmp_path / "a.gz", array)
    back = read_idx(tmp_path / "a.gz")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_gz_name_is_really_compressed(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.gz", labels())
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == encode_idx(labels())


def test_header_is_the_official_one(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", images(3, 4, 5))
    write_idx(tmp_path / "l", labels(3))
    assert (tmp_path / "i").read_bytes()[:16] == struct.pack(">IIII", 0x803, 3, 4, 5)
    assert (tmp_path / "l").read_bytes()[:8] == struct.pack(">II", 0x801, 3)


def test_md5_of_content_ignores_compression(tmp_path: Path) -> None:
    array = images()
    write_idx(tmp_path / "plain", array)
    write_idx(tmp_path / "packed.gz", array)
    expected = hashlib.md5(encode_idx(array)).hexdigest()
    assert md5_of_content(tmp_path / "plain") == expected
    assert md5_of_content(tmp_path / "packed.gz") == expected


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">II", 0x999, 1) + b"\0")
    message = error_of(read_idx, path)
    assert message.startswith(f"{path}: wrong magic number 0x00000999")
    assert "0x00000803 for images or 0x00000801 for labels" in message


def test_gzip_content_under_plain_name_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(encode_idx(labels())))
    message = error_of(read_idx, path)
    assert str(path) in message
    assert "wrong magic number" in message and "name the file *.gz" in message


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
def test_truncated_payload(tmp_path: Path, name: str) -> None:
    data = encode_idx(images(10))[: 16 + 100]
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    message = error_of(read_idx, path)
    assert message == f"{path}: truncated: header says 10x28x28 = 7840 bytes, found 100"


def test_payload_too_long(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(encode_idx(labels(4)) + b"\0\0")
    assert error_of(read_idx, path) == f"{path}: too long: header says 4 = 4 bytes, found 6"


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(encode_idx(images(2))[:10])
    message = error_of(read_idx, path)
    assert message == f"{path}: truncated header: 3 dimensions need 16 bytes, found 10"


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, images(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = error_of(read_idx, path)
    assert message.startswith(f"{path}: truncated gzip stream")
    assert error_of(md5_of_content, path) == message


def test_not_gzip_under_gz_name(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(encode_idx(labels()))
    assert error_of(read_idx, path).startswith(f"{path}: not a valid gzip file")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gz"
    assert error_of(read_idx, path) == f"{path}: file not found"
    assert error_of(md5_of_content, path) == f"{path}: file not found"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert error_of(read_idx, path) == f"{path}: empty file (0 bytes)"


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert error_of(read_idx, tmp_path) == f"{tmp_path}: is a folder, expected an IDX file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    write_idx(path, labels())
    path.chmod(0)
    assert error_of(read_idx, path) == f"{path}: cannot read: Permission denied"


def test_pair_shapes_and_dtypes(tmp_path: Path) -> None:
    write_idx(tmp_path / "i.gz", images(7, 6, 5))
    write_idx(tmp_path / "l", labels(7))
    split = read_idx_pair(tmp_path / "i.gz", tmp_path / "l")
    assert split.images.shape == (7, 1, 6, 5) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.images[:, 0], images(7, 6, 5))
    np.testing.assert_array_equal(split.labels, labels(7))


def test_pair_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "i.gz", images(7))
    write_idx(tmp_path / "l.gz", labels(6))
    message = error_of(read_idx_pair, tmp_path / "i.gz", tmp_path / "l.gz")
    assert message == (
        f"{tmp_path / 'i.gz'} holds 7 images but {tmp_path / 'l.gz'} holds 6 labels: "
        "counts must match"
    )


def test_pair_with_files_swapped(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", images(3))
    write_idx(tmp_path / "l", labels(3))
    message = error_of(read_idx_pair, tmp_path / "l", tmp_path / "i")
    assert message.startswith(f"{tmp_path / 'l'}: expected images (3-D integers, magic 0x00000803)")


def test_os_error_becomes_cannot_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlpipe.ingest.idx as idx

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(idx, "open", refuse, raising=False)
    path = tmp_path / "labels"
    assert error_of(read_idx, path) == f"{path}: cannot read: Permission denied"
