"""The `data` section of params.yaml: what ingest reads, and the facts later stages check."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from PIL import Image

from mlpipe.config import check
from mlpipe.dataset import class_name_problem


class DataSource(str, Enum):
    fashion_mnist = "fashion_mnist"
    digits = "digits"
    imagefolder = "imagefolder"  # your own PNG/JPEG files, one sub-folder per class


# Pillow raises DecompressionBombError above twice its warning threshold
PILLOW_PIXEL_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

# The defaults are the official Fashion-MNIST (conf/data/fashion_mnist.yaml).
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    source: DataSource = DataSource.fashion_mnist
    path: str | None = None  # explicit folder; tried first
    debian_dir: str | None = "/usr/share/datasets/fashion-mnist"
    urls: list[str] = field(default_factory=lambda: [FASHION_URL])
    verify_checksums: bool = True
    image_size: int = 28
    channels: int = 1
    # imagefolder: [] means the sorted sub-folder names
    class_names: list[str] = field(default_factory=lambda: list(FASHION_CLASSES))
    test_fraction: float | None = None  # only for sources without an official test split
    split_seed: int = 42  # for test_fraction
    resize: bool = True  # imagefolder: resize other sizes to image_size (else an error)
    skip_unreadable: bool = False  # imagefolder: skip (and list) bad files instead of failing
    # imagefolder: larger images are refused, from the size in the file's header, before
    # decoding: 50 MP holds 8000x6000 photos and costs ~0.5 GB at most to read
    max_image_pixels: int = 50_000_000
    follow_external_links: bool = False  # imagefolder: follow links out of `path`
    workers: int = 0  # imagefolder: processes decoding images; 0: one per core

    def __post_init__(self) -> None:
        check(self.image_size > 0, "image_size", f"must be > 0, got {self.image_size}")
        check(self.workers >= 0, "workers", f"must be >= 0 (0: one per core), got {self.workers}")
        check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        from_folders = DataSource(self.source) is DataSource.imagefolder and not self.class_names
        check(
            from_folders or len(self.class_names) >= 2, "class_names", "needs at least two classes"
        )
        check(
            len(set(self.class_names)) == len(self.class_names),
            "class_names",
            "must be unique",
        )
        bad = class_name_problem(self.class_names)
        check(bad is None, "class_names", f"{_shown(bad[0])} {bad[1]}" if bad else "")
        check(
            0 < self.max_image_pixels <= PILLOW_PIXEL_LIMIT,
            "max_image_pixels",
            f"must be in 1..{PILLOW_PIXEL_LIMIT:,} (Pillow refuses larger images), "
            f"got {self.max_image_pixels:,}",
        )
        if self.test_fraction is not None:
            check(
                0.0 < self.test_fraction < 1.0,
                "test_fraction",
                f"must be in (0, 1), got {self.test_fraction}",
            )


def _shown(name: str, limit: int = 60) -> str:
    """A class name for a one-line message: quoted, escaped, long ones cut."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}..."
