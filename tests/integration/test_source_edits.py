"""DVC sees edits of an image folder outside the repository: a real `dvc repro` reruns
ingest after an image is edited in place, added or removed, and only then (the
`manifest` stage's digest of paths, sizes and mtimes is ingest's dependency)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.integration.test_pipeline_e2e import copy_repo, run

from mlpipe.dataset import load_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = (np.arange(64).reshape(8, 8) * 3 + value) % 256
    Image.fromarray(ramp.astype(np.uint8)).save(path)


def use_folder(repo: Path, images: Path) -> None:
    """conf/ made to read `images` by default, and params.yaml composed from it."""
    config = repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("- data: fashion_mnist", "- data: imagefolder"))
    data = repo / "conf/data/imagefolder.yaml"
    text = data.read_text().replace("path: null  # required", f"path: {images}")
    data.write_text(text.replace("image_size: 28", "image_size: 8"))
    run(["python", "-m", "mlpipe.cli", "params"], repo)


def pixels_of(repo: Path, image_id: str) -> np.ndarray:
    for split in load_dataset(repo / "data/raw").splits.values():
        assert split.ids is not None
        if image_id in split.ids:
            return split.images[list(split.ids).index(image_id)]
    raise AssertionError(f"{image_id} not ingested")


def ingest_ran(repo: Path) -> str:
    """What `dvc repro ingest` did with ingest: ran it, restored a state seen before from
    the run-cache, or left it (unchanged)."""
    out = run(["dvc", "repro", "ingest"], repo).stdout
    assert "Running stage 'manifest'" in out, out
    for what, line in [
        ("ran", "Running stage 'ingest'"),
        ("cached", "Stage 'ingest' is cached - skipping run"),
        ("unchanged", "Stage 'ingest' didn't change"),
    ]:
        if line in out:
            return what
    raise AssertionError(out)


def test_editing_adding_or_removing_an_image_reruns_ingest(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for c in ("cat", "dog"):
        for i in range(3):
            write_png(images / c / f"{i}.png", 40 * i + (100 if c == "dog" else 0))
    repo = copy_repo(tmp_path / "repo")
    use_folder(repo, images)
    assert ingest_ran(repo) == "ran"
    before = pixels_of(repo, "cat/1.png")
    assert ingest_ran(repo) == "unchanged"  # nothing changed: ingest is not rerun

    edited = images / "cat" / "1.png"
    write_png(edited, 7)  # same name, same size on disk: new pixels, new mtime
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ingest_ran(repo) == "ran"
    assert not np.array_equal(pixels_of(repo, "cat/1.png"), before)

    write_png(images / "dog" / "3.png", 33)
    assert ingest_ran(repo) == "ran"
    assert sum(len(s) for s in load_dataset(repo / "data/raw").splits.values()) == 7
    (images / "dog" / "3.png").unlink()  # back to a folder seen before: DVC's run-cache
    assert ingest_ran(repo) == "cached"
    assert sum(len(s) for s in load_dataset(repo / "data/raw").splits.values()) == 6
