"""A bounded on-disk sample of the images a served model answered, for `mlpipe monitor`.

Off unless `mlpipe serve --sample-dir DIR` is given. A kept request becomes one file,
`requests-<unix ns>-<pid>-n<images>.npz` (key `images`, uint8, (N, C, H, W)), written
to a temporary name and renamed, so a reader never sees half a file. When the folder
holds more than `max_images` images, the oldest files go first. `mlpipe monitor --images
DIR` reads the folder as one batch (monitor.batch: a folder of .npz files).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpipe.errors import ConfigError

log = logging.getLogger(__name__)
FILE = re.compile(r"requests-(\d+)-(\d+)-n(\d+)\.npz")


@dataclass
class RequestSampler:
    folder: Path
    rate: float = 1.0  # the share of accepted requests kept
    max_images: int = 10_000  # the buffer's bound, in images
    seed: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"--sample-rate: must be in (0, 1], got {self.rate}")
        if self.max_images < 1:
            raise ConfigError(f"--sample-max-images: must be >= 1, got {self.max_images}")
        self.folder = Path(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--sample-dir {self.folder}: {exc.strerror}") from None
        self._random = np.random.default_rng(self.seed)

    def offer(self, images: np.ndarray) -> Path | None:
        """Keep `images` (N, C, H, W, values 0..255) with probability `rate`; the file, or
        None. Called from a worker thread after the answer went out: never raises, since a
        full disk must not take the server down (it is logged instead)."""
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            try:
                path = self._write(images.astype(np.uint8, copy=False))
                self._trim()
            except OSError as exc:
                log.warning("request sample not kept in %s: %s", self.folder, exc)
                return None
            return path

    def _write(self, images: np.ndarray) -> Path:
        name = f"requests-{time.time_ns()}-{os.getpid()}-n{len(images)}.npz"
        path = self.folder / name
        tmp = self.folder / f".{name}.tmp"
        with tmp.open("wb") as handle:
            np.savez(handle, images=images)
        os.replace(tmp, path)
        return path

    def _trim(self) -> None:
        """Remove the oldest files while the folder holds more than `max_images` images."""
        files = sorted(kept(self.folder), key=lambda f: (f[1], f[0].name))
        total = sum(n for _, _, n in files)
        for path, _, n in files:
            if total <= self.max_images:
                break
            path.unlink(missing_ok=True)
            total -= n


def kept(folder: Path) -> list[tuple[Path, int, int]]:
    """(file, time in ns, images) of every sample file in `folder`."""
    out = []
    for path in folder.iterdir():
        found = FILE.fullmatch(path.name)
        if found:
            out.append((path, int(found.group(1)), int(found.group(3))))
    return out
