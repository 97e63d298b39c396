"""Sources: where Fashion-MNIST is looked for, what each failure says, digits."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mlpipe.config import to_dataclass
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest import sources
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.idx import write_idx
from mlpipe.ingest.sources import FASHION_HOME, load_source

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [f"c{i}" for i in range(10)]
CLOSED_PORT_URL = "http://127.0.0.1:9/"  # discard port: refused at once


def write_fashion(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> Path:
    """Small but well-formed Fashion-MNIST files; labels cycle through 0..9."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", pixels)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10)
    return folder


def fashion_cfg(**overrides: Any) -> DataConfig:
    values: dict[str, Any] = {
        "source": "fashion_mnist",
        "path": None,
        "debian_dir": None,
        "urls": [],
        "verify_checksums": False,
        "class_names": CLASSES,
    }
    return DataConfig(**{**values, **overrides})


def digits_cfg(**overrides: Any) -> DataConfig:
    values = yaml.safe_load((ROOT / "conf/data/digits.yaml").read_text())
    return to_dataclass(DataConfig, {**values, **overrides}, "digits")


def error_of(cfg: DataConfig, kind: type[Exception] = DataError) -> str:
    with pytest.raises(kind) as info:
        load_source(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLPIPE_CACHE", str(cache))
    return cache


# --- Fashion-MNIST: locations -------------------------------------------------


def test_explicit_path(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    ds = load_source(fashion_cfg(path=str(folder)))
    assert {name: len(split) for name, split in ds.splits.items()} == {"train": 30, "test": 10}
    assert ds.splits["train"].images.shape == (30, 1, 28, 28)
    assert ds.splits["train"].images.dtype == np.uint8
    assert ds.splits["test"].labels.dtype == np.int64
    assert ds.class_names == CLASSES
    assert ds.source == str(folder)


def test_uncompressed_files_and_resize_to_config(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm", gz=False)
    ds = load_source(fashion_cfg(path=str(folder), image_size=32, channels=3))
    assert ds.splits["train"].images.shape == (30, 3, 32, 32)


def test_explicit_path_missing_does_not_fall_back(tmp_path: Path) -> None:
    debian = write_fashion(tmp_path / "debian")  # would work, must not be used
    missing = tmp_path / "nowhere"
    message = error_of(fashion_cfg(path=str(missing), debian_dir=str(debian)))
    assert message.startswith(f"data.path={missing}: missing;")
    assert "train-images-idx3-ubyte" in message


def test_explicit_path_incomplete(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    message = error_of(fashion_cfg(path=str(folder)))
    assert f"data.path={folder}: incomplete: no t10k-labels-idx1-ubyte" in message


def test_debian_dir_used_when_path_unset(tmp_path: Path) -> None:
    debian = write_fashion(tmp_path / "debian")
    ds = load_source(fashion_cfg(debian_dir=str(debian), urls=[CLOSED_PORT_URL]))
    assert ds.source == str(debian)
    assert len(ds.splits["train"]) == 30


def test_checksum_mismatch_names_file_and_both_sums(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    first = folder / "train-images-idx3-ubyte.gz"
    actual = sources.md5_of_content(first)
    message = error_of(fashion_cfg(path=str(folder), verify_checksums=True))
    assert message.startswith(f"{first}: MD5 of the decompressed content is {actual}")
    assert "expected f4a8712d7a061bf5bd6d2ca38dc4d50a" in message


def test_nothing_found_says_how_to_get_the_data(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-debian"
    message = error_of(fashion_cfg(debian_dir=str(nowhere), urls=[CLOSED_PORT_URL]))
    assert message.startswith("Fashion-MNIST not found: tried data.path (unset), ")
    assert f"{nowhere} (missing)" in message
    assert f"download from {CLOSED_PORT_URL} (Connection refused)" in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert FASHION_HOME in message and "data.path=" in message


def test_nothing_configured_at_all() -> None:
    message = error_of(fashion_cfg())
    assert "data.debian_dir (unset)" in message
    assert "download (data.urls is empty)" in message


def test_wrong_number_of_class_names(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    message = error_of(fashion_cfg(path=str(folder), class_names=["a", "b"]), ConfigError)
    assert message == "data.class_names: Fashion-MNIST has 10 classes, got 2 names"


def test_label_outside_class_names(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12], dtype=np.uint8))
    message = error_of(fashion_cfg(path=str(folder)))
    assert message.startswith(f"{bad}: labels span 0..12 but data.class_names has 10 names")


# --- Fashion-MNIST: download from a local server --------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def publish_served_md5s(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in sources.FASHION_FILES:
        digest = hashlib.md5((root / f"{name}.gz").read_bytes()).hexdigest()
        monkeypatch.setitem(sources.FASHION_GZ_MD5, name, digest)


def test_download_into_cache_then_reuse(
    server: tuple[str, Path], private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    publish_served_md5s(write_fashion(root), monkeypatch)
    ds = load_source(fashion_cfg(urls=[CLOSED_PORT_URL, url]))
    assert ds.source == url
    assert sorted(p.name for p in private_cache.iterdir()) == sorted(
        f"{name}.gz" for name in sources.FASHION_FILES
    )
    for served in root.iterdir():
        served.unlink()
    again = load_source(fashion_cfg(urls=[url]))  # server now empty: cache only
    np.testing.assert_array_equal(again.splits["test"].images, ds.splits["test"].images)


def test_download_with_wrong_md5_is_reported_and_not_kept(
    server: tuple[str, Path], private_cache: Path
) -> None:
    url, root = server
    write_fashion(root)
    message = error_of(fashion_cfg(urls=[url]))
    assert f"download from {url} (train-images-idx3-ubyte.gz: MD5 " in message
    assert "expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d" in message
    assert list(private_cache.glob("*")) == []  # neither the bad file nor a temp file


def test_download_http_error(server: tuple[str, Path]) -> None:
    url, _ = server
    message = error_of(fashion_cfg(urls=[url]))
    assert f"download from {url} (HTTP 404 File not found)" in message


# --- digits ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_source(digits_cfg())


def test_digits_shapes_and_classes(digits: Any) -> None:
    train, test = digits.splits["train"], digits.splits["test"]
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape[1:] == (1, 28, 28)
    assert len(train) + len(test) == 1797
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert train.images.max() == 255 and train.images.min() == 0
    assert digits.class_names == [str(i) for i in range(10)]


def test_digits_split_follows_test_fraction(digits: Any) -> None:
    assert len(digits.splits["test"]) == 360  # ceil(0.2 * 1797)
    half = load_source(digits_cfg(test_fraction=0.5, image_size=8))
    assert len(half.splits["test"]) == 899
    default = load_source(digits_cfg(test_fraction=None, image_size=8))
    assert len(default.splits["test"]) == 360


def test_digits_deterministic_per_seed(digits: Any) -> None:
    same = load_source(digits_cfg())
    other = load_source(digits_cfg(split_seed=7))
    for name in ("train", "test"):
        np.testing.assert_array_equal(same.splits[name].images, digits.splits[name].images)
        np.testing.assert_array_equal(same.splits[name].labels, digits.splits[name].labels)
    assert not np.array_equal(other.splits["test"].labels, digits.splits["test"].labels)


def test_digits_native_size_keeps_scaled_pixels() -> None:
    from sklearn.datasets import load_digits

    ds = load_source(digits_cfg(image_size=8, channels=3, test_fraction=0.1))
    images = np.concatenate([s.images for s in ds.splits.values()])
    assert images.shape == (1797, 3, 8, 8)
    np.testing.assert_array_equal(images[:, 0], images[:, 2])
    expected = {round(v * 255 / 16) for v in np.unique(load_digits().images)}
    assert set(np.unique(images).tolist()) == expected


def test_digits_too_few_class_names() -> None:
    message = error_of(digits_cfg(class_names=["a", "b"]))
    assert message.startswith("digits: labels span 0..9 but data.class_names has 2 names")
