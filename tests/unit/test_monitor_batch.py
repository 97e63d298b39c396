"""Reading a batch for `mlpipe monitor`: folders and .npz files, and each refusal's line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlpipe.monitor.batch import BadInput, check_shape, load_batch


def save_pngs(folder: Path, images: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")


def test_folder_of_greyscale_pngs_nested_and_hidden(tmp_path: Path) -> None:
    grey = [np.full((28, 28), v, dtype=np.uint8) for v in (0, 50, 100)]
    save_pngs(tmp_path / "a", grey[:2])
    save_pngs(tmp_path / "b", grey[2:])
    save_pngs(tmp_path / ".cache", grey[:1])  # hidden: skipped
    (tmp_path / "notes.txt").write_text("not an image")
    batch = load_batch(tmp_path)
    assert batch.images.shape == (3, 1, 28, 28)
    assert batch.ids.tolist() == ["a/0.png", "a/1.png", "b/0.png"]
    assert batch.images[:, 0, 0, 0].tolist() == [0, 50, 100]


def test_rgb_pngs_keep_three_channels_and_fail_the_shape_check(tmp_path: Path) -> None:
    save_pngs(tmp_path, [np.zeros((28, 28, 3), dtype=np.uint8)] * 2)
    batch = load_batch(tmp_path)
    assert batch.images.shape == (2, 3, 28, 28)
    with pytest.raises(
        BadInput, match=r"wrong channels: images are 3x28x28, the model takes 1x28x28"
    ):
        check_shape(batch, [1, 28, 28])


def test_mixed_sizes_name_both(tmp_path: Path) -> None:
    save_pngs(tmp_path, [np.zeros((28, 28), np.uint8), np.zeros((32, 32), np.uint8)])
    with pytest.raises(
        BadInput, match=r"images of different shapes, e.g. 1x28x28 \(0.png\) and 1x32x32 \(1.png\)"
    ):
        load_batch(tmp_path)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no image files"):
        load_batch(tmp_path)
    with pytest.raises(BadInput, match="no such file or folder"):
        load_batch(tmp_path / "nope")


def test_npz_forms(tmp_path: Path) -> None:
    np.savez(tmp_path / "hw.npz", images=np.zeros((4, 28, 28), dtype=np.uint8))
    assert load_batch(tmp_path / "hw.npz").images.shape == (4, 1, 28, 28)
    np.savez(tmp_path / "ints.npz", x=np.full((2, 1, 28, 28), 300, dtype=np.int16))
    assert load_batch(tmp_path / "ints.npz").images.max() == 300  # kept: the checks report it
    np.savez(tmp_path / "whole.npz", images=np.full((2, 1, 4, 4), 7.0))
    assert load_batch(tmp_path / "whole.npz").images.dtype == np.int64


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": np.zeros(3)}, r"no array named images or x or arr_0 \(has: labels\)"),
        ({"images": np.zeros((0, 1, 28, 28))}, "the batch is empty"),
        ({"images": np.zeros((2, 28))}, r"images must be \(N, C, H, W\) or \(N, H, W\)"),
        ({"images": np.full((2, 1, 4, 4), 0.5)}, "pixels must be integers 0..255"),
        ({"images": np.full((2, 1, 4, 4), np.nan)}, "pixels must be finite"),
    ],
)
def test_npz_refusals(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "b.npz"
    np.savez(path, **arrays)
    with pytest.raises(BadInput, match=message):
        load_batch(path)


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    path.write_text("text")
    with pytest.raises(BadInput, match=r"unreadable \.npz"):
        load_batch(path)


def test_a_folder_of_npz_files_is_one_batch_in_name_order(tmp_path):
    """What `mlpipe serve --sample-dir` keeps: one .npz per kept request."""
    first, second = np.zeros((2, 1, 3, 3), np.uint8), np.full((3, 1, 3, 3), 9, np.uint8)
    np.savez(tmp_path / "requests-2-1-n3.npz", images=second)
    np.savez(tmp_path / "requests-1-1-n2.npz", images=first)
    batch = load_batch(tmp_path)
    assert batch.images.shape == (5, 1, 3, 3) and batch.images[2:].min() == 9
    assert list(batch.ids[:3]) == ["requests-1-1-n2.npz[0]", "requests-1-1-n2.npz[1]",
                                   "requests-2-1-n3.npz[0]"]  # fmt: skip
    np.savez(tmp_path / "requests-3-1-n1.npz", images=np.zeros((1, 3, 3, 3), np.uint8))
    with pytest.raises(BadInput, match=r"\.npz files of different image shapes"):
        load_batch(tmp_path)
