"""The imagefolder source: layouts, conversion, class names and every bad-file path."""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from mlpipe.config import to_dataclass
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest import imagefolder
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.imagefolder import load_imagefolder, open_image, write_imagefolder
from mlpipe.ingest.sources import load_source, summary

ROOT = Path(__file__).resolve().parents[2]


def cfg(path: Path | None, **overrides: Any) -> DataConfig:
    values: dict[str, Any] = {
        "name": "mine",
        "source": "imagefolder",
        "path": None if path is None else str(path),
        "debian_dir": None,
        "verify_checksums": False,
        "image_size": 8,
        "channels": 1,
        "class_names": [],
        "test_fraction": 0.5,
    }
    return DataConfig(**{**values, **overrides})


def pixels(value: int, size: int = 8, channels: int = 1) -> np.ndarray:
    """A (size, size[, 3]) uint8 image: a gradient offset by `value`, not constant."""
    ramp = (np.arange(size * size, dtype=np.int64).reshape(size, size) + value) % 256
    image = ramp.astype(np.uint8)
    return image if channels == 1 else np.stack([image, 255 - image, image // 2], axis=-1)


def write(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def nested(root: Path) -> Path:
    """train/{bird,cat}: 2 PNGs each; test/{bird,cat}: 1 PNG + 1 JPEG (flat grey) each."""
    for c, name in enumerate(["cat", "bird"]):
        for i in range(2):
            write(root / "train" / name / f"{i}.png", pixels(10 * c + i))
        write(root / "test" / name / "0.png", pixels(100 + c))
        write(root / "test" / name / "1.jpg", np.full((8, 8), 60 + 100 * c, np.uint8), "JPEG")
    return root


def test_nested_train_test_gives_arrays_labels_ids_and_sorted_classes(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0junk")  # hidden: ignored
    ds = load_source(cfg(root))
    assert ds.class_names == ["bird", "cat"]
    assert ds.source == str(root)
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.images.shape == (4, 1, 8, 8) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 0, 1, 1] and train.labels.dtype == np.int64
    assert train.ids is not None and train.ids.tolist() == [
        "train/bird/0.png",
        "train/bird/1.png",
        "train/cat/0.png",
        "train/cat/1.png",
    ]
    np.testing.assert_array_equal(train.images[0, 0], pixels(10))  # bird = folder "bird", c=1
    np.testing.assert_array_equal(train.images[3, 0], pixels(1))
    assert test.ids is not None and test.ids.tolist()[:2] == ["test/bird/0.png", "test/bird/1.jpg"]
    np.testing.assert_array_equal(test.images[0, 0], pixels(101))
    jpeg = test.images[1, 0].astype(int)  # lossy, but a flat grey survives within a level or two
    assert np.abs(jpeg - 160).max() <= 2
    assert ds.extra["skipped"] == [] and ds.extra["resized"] == 0


def test_flat_folder_is_split_stratified_and_reproducibly(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for c, name in enumerate(["a", "b"]):
        for i in range(4):
            write(root / name / f"{i}.png", pixels(40 * c + i))
        write(root / name / "x.jpeg", pixels(200 + c), "JPEG")
    ds = load_imagefolder(cfg(root, test_fraction=0.4))
    train, test = ds.splits["train"], ds.splits["test"]
    assert (len(train), len(test)) == (6, 4)
    assert np.bincount(test.labels).tolist() == [2, 2]
    assert train.ids is not None and test.ids is not None
    ids = sorted(train.ids.tolist() + test.ids.tolist())
    assert ids == sorted(
        f"{n}/{f}" for n in "ab" for f in ["0.png", "1.png", "2.png", "3.png", "x.jpeg"]
    )
    for split in (train, test):  # each image is the file its id names, with its folder's label
        assert split.ids is not None
        for image, label, rel in zip(split.images, split.labels, split.ids, strict=True):
            assert label == "ab".index(rel[0])
            if rel.endswith(".png"):
                c, i = "ab".index(rel[0]), int(rel[2])
                np.testing.assert_array_equal(image[0], pixels(40 * c + i))
    again = load_imagefolder(cfg(root, test_fraction=0.4))
    assert again.splits["test"].ids.tolist() == test.ids.tolist()  # type: ignore[union-attr]
    assert "test_fraction 0.4" in ds.extra["layout"]


def test_channels_resize_and_mode_conversion(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    write(root / "train" / "a" / "rgb.png", pixels(0, size=16, channels=3))
    write(root / "train" / "b" / "grey.png", pixels(5, size=8))
    rgba = np.dstack([pixels(0, channels=3), np.full((8, 8), 128, np.uint8)])
    write(root / "test" / "a" / "rgba.png", rgba)
    Image.fromarray(pixels(9)).convert("P").save(root / "test" / "a" / "pal.png")
    write(root / "test" / "b" / "wide16.png", (pixels(3).astype(np.uint16) << 8) | 0xFF)
    rgb = load_imagefolder(cfg(root, channels=3))
    assert rgb.splits["train"].images.shape == (2, 3, 8, 8)
    assert rgb.extra["resized"] == 1
    grey = rgb.splits["train"].images[1]  # L replicated to three equal channels
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    np.testing.assert_array_equal(grey[0], pixels(5))
    # test/a holds pal.png, rgba.png (sorted); alpha is dropped
    np.testing.assert_array_equal(rgb.splits["test"].images[1].transpose(1, 2, 0), rgba[..., :3])
    luma = load_imagefolder(cfg(root, channels=1))
    assert luma.splits["test"].images.shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(luma.splits["test"].images[0, 0], pixels(9))  # palette
    np.testing.assert_array_equal(luma.splits["test"].images[2, 0], pixels(3))  # 16-bit: high byte


def test_wrong_size_is_an_error_when_resize_is_off(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    big = write(root / "train" / "cat" / "big.png", pixels(0, size=12))
    with pytest.raises(DataError) as info:
        load_imagefolder(cfg(root, resize=False))
    assert str(info.value) == (
        f"{big}: 12x12 pixels, expected 8x8 (data.image_size); set data.resize=true to resize"
    )


def test_configured_class_names_must_match_and_set_the_order(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    ds = load_imagefolder(cfg(root, class_names=["cat", "bird"]))
    assert ds.class_names == ["cat", "bird"]
    assert ds.splits["train"].labels.tolist() == [0, 0, 1, 1]
    assert ds.splits["train"].ids.tolist()[0] == "train/cat/0.png"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as info:
        load_imagefolder(cfg(root, class_names=["cat", "dog"]))
    assert str(info.value) == (
        f"data.class_names does not match the class folders in {root}: no folder for 'dog'; "
        "folders not in the list: 'bird' (set data.class_names=[] to use the folder names)"
    )


def test_path_is_required() -> None:
    with pytest.raises(ConfigError, match=r"^data\.path: required for data=imagefolder"):
        load_source(cfg(None))


def message(root: Path, **overrides: Any) -> str:
    with pytest.raises((DataError, ConfigError)) as info:
        load_imagefolder(cfg(root, **overrides))
    text = str(info.value)
    assert "\n" not in text
    return text


def noise_png(path: Path) -> bytes:
    """The bytes of a PNG of random pixels: its compressed data is most of the file."""
    write(path, np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8))
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_png_names_the_file_unless_skipped(tmp_path: Path, damage: str) -> None:
    root = nested(tmp_path / "imgs")
    bad = root / "test" / "cat" / "0.png"
    data = bytearray(noise_png(bad))
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]  # cut inside the pixel data
    else:
        data[50:60] = b"\xff" * 10  # junk in the compressed stream
    bad.write_bytes(bytes(data))
    text = message(root)
    assert text.startswith(f"{bad}: corrupt or truncated image (")
    assert text.endswith("; fix or remove it, or set data.skip_unreadable=true to skip such files")
    ds = load_imagefolder(cfg(root, skip_unreadable=True))
    assert ds.extra["skipped"][0]["file"] == "test/cat/0.png"
    assert ds.extra["skipped"][0]["reason"].startswith("corrupt or truncated image")
    assert len(ds.splits["test"]) == 3


def test_non_image_file_names_the_file_unless_skipped(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    notes = root / "train" / "bird" / "notes.txt"
    notes.write_text("not an image\n")
    gif = root / "train" / "bird" / "anim.gif"
    Image.fromarray(pixels(0)).save(gif, format="GIF")
    assert message(root).startswith(f"{gif}: not a PNG or JPEG file (GIF image);")
    gif.unlink()
    assert message(root).startswith(
        f"{notes}: not an image file (Pillow cannot identify it); fix or remove it"
    )
    ds = load_imagefolder(cfg(root, skip_unreadable=True))
    assert ds.extra["skipped"] == [
        {"file": "train/bird/notes.txt", "reason": "not an image file (Pillow cannot identify it)"}
    ]


def test_folder_problems(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    empty = root / "test" / "cat"
    for f in empty.iterdir():
        f.unlink()
    assert message(root) == f"{empty}: empty class folder (no image files)"

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert message(nothing).startswith(f"{nothing}: empty dataset: no class folders; expected")
    write(nothing / "loose.png", pixels(0))
    assert "(found 1 file(s) but no folders)" in message(nothing)

    one = tmp_path / "one"
    write(one / "only" / "0.png", pixels(0))
    assert (
        message(one)
        == f"data.path={one}: found 1 class folder(s) (only); need at least two classes"
    )

    half = tmp_path / "half"
    write(half / "train" / "a" / "0.png", pixels(0))
    assert message(half).startswith(f"data.path={half}: has train/ but no test/;")

    assert message(tmp_path / "nowhere") == f"data.path={tmp_path / 'nowhere'}: missing"


def test_class_folder_missing_from_test_is_left_to_validation(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    for f in (root / "test" / "bird").iterdir():
        f.unlink()
    (root / "test" / "bird").rmdir()
    ds = load_imagefolder(cfg(root))
    assert ds.class_names == ["bird", "cat"]
    assert ds.splits["test"].labels.tolist() == [1, 1]


def test_config_class_names_may_be_empty_only_for_imagefolder() -> None:
    assert cfg(None).class_names == []
    with pytest.raises(ConfigError, match="class_names: needs at least two classes"):
        cfg(None, class_names=["only"])
    with pytest.raises(ConfigError, match="class_names: needs at least two classes"):
        DataConfig(source="digits", class_names=[])  # type: ignore[arg-type]


def test_conf_option_loads_and_its_path_is_required(tmp_path: Path) -> None:
    values = yaml.safe_load((ROOT / "conf" / "data" / "imagefolder.yaml").read_text())
    loaded = to_dataclass(DataConfig, values, "params.yaml: data")
    assert (loaded.source, loaded.path, loaded.class_names) == ("imagefolder", None, [])
    assert (loaded.resize, loaded.skip_unreadable) == (True, False)
    assert (loaded.max_image_pixels, loaded.follow_external_links) == (50_000_000, False)
    with pytest.raises(ConfigError, match=r"^data\.path: required for data=imagefolder"):
        load_source(loaded)


# links, hidden entries, pixel limits, class names ------------------------------


def test_links_out_of_the_folder_are_refused_unless_allowed(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    outside = tmp_path / "elsewhere"
    write(outside / "dog" / "0.png", pixels(7))
    write(outside / "dog" / "1.png", pixels(8))
    link = root / "train" / "dog"
    link.symlink_to(outside / "dog", target_is_directory=True)
    assert message(root) == (
        f"{link}: symbolic link to {outside / 'dog'}, outside data.path={root}; copy what it "
        "points to into the folder, or set data.follow_external_links=true"
    )
    link.unlink()
    file_link = root / "train" / "cat" / "2.png"
    file_link.symlink_to(outside / "dog" / "0.png")
    assert message(root).startswith(f"{file_link}: symbolic link to {outside / 'dog' / '0.png'}")
    ds = load_imagefolder(cfg(root, follow_external_links=True))
    assert ds.splits["train"].ids.tolist()[-1] == "train/cat/2.png"  # type: ignore[union-attr]
    np.testing.assert_array_equal(ds.splits["train"].images[-1, 0], pixels(7))


def test_links_inside_the_folder_are_followed(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    (root / "train" / "cat" / "again.png").symlink_to(root / "train" / "bird" / "0.png")
    (root / "train" / "cat" / "more").symlink_to(Path("..") / "bird", target_is_directory=True)
    ds = load_imagefolder(cfg(root))
    assert ds.splits["train"].ids.tolist() == [  # type: ignore[union-attr]
        "train/bird/0.png",
        "train/bird/1.png",
        "train/cat/0.png",
        "train/cat/1.png",
        "train/cat/again.png",
        "train/cat/more/0.png",
        "train/cat/more/1.png",
    ]
    assert ds.extra["ignored"] == []


def test_hidden_entries_and_link_loops_are_left_out_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = nested(tmp_path / "imgs")
    write(root / "train" / ".hidden" / "0.png", pixels(3))  # a class folder nobody sees
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0junk")
    (root / "test" / "cat" / "self.png").symlink_to("self.png")  # ELOOP
    (root / "test" / "cat" / "up").symlink_to("..", target_is_directory=True)  # walks forever
    (root / "test" / "bird" / "gone.png").symlink_to("nowhere.png")
    with caplog.at_level(logging.WARNING, logger="mlpipe.ingest"):
        ds = load_imagefolder(cfg(root))
    assert ds.class_names == ["bird", "cat"] and len(ds.splits["test"]) == 4
    assert ds.extra["ignored"] == [
        {"entry": "train/.hidden", "reason": "hidden"},
        {"entry": "train/cat/.DS_Store", "reason": "hidden"},
        {"entry": "test/bird/gone.png", "reason": "broken_link"},
        {"entry": "test/cat/self.png", "reason": "link_loop"},
        {"entry": "test/cat/up", "reason": "link_loop"},
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"ignored 2 hidden (name starts with '.') entries under {root} (all listed in "
        "meta.json): train/.hidden, train/cat/.DS_Store",
        f"ignored 2 symbolic link loop entries under {root} (all listed in meta.json): "
        "test/cat/self.png, test/cat/up",
        f"ignored 1 symbolic link to nothing entry under {root} (all listed in meta.json): "
        "test/bird/gone.png",
    ]
    counts = summary(ds)["ignored"]
    assert counts == {"hidden": 2, "link_loop": 2, "broken_link": 1, "not_a_file": 0}


def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A small 16-bit PNG whose header claims width x height: nothing decodes it."""
    write(path, pixels(0).astype(np.uint16) << 8)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 4  # signature, chunk length; then b"IHDR" and 13 bytes of fields
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    root = nested(tmp_path / "imgs")
    bomb = huge_png_header(root / "train" / "cat" / "bomb.png", 13_000, 13_000)
    assert bomb.stat().st_size < 1000
    with open_image(bomb) as opened:
        assert (opened.size, opened.mode) == ((13_000, 13_000), "I;16")
    assert message(root) == (
        f"{bomb}: 13000x13000 = 169,000,000 pixels, more than data.max_image_pixels="
        "50,000,000; shrink the image, or raise data.max_image_pixels"
    )
    assert message(root, skip_unreadable=True).startswith(f"{bomb}: 13000x13000")
    huge_png_header(bomb, 20_000, 20_000)  # past Pillow's own limit: refused in the header
    assert message(root).startswith(
        f"{bomb}: more than data.max_image_pixels=50,000,000 (Image size (400000000 pixels)"
    )
    bomb.unlink()
    big = root / "train" / "bird" / "0.png"  # the first one read; every image is 8x8 = 64 pixels
    assert message(root, max_image_pixels=63).startswith(f"{big}: 8x8 = 64 pixels, more than")
    assert len(load_imagefolder(cfg(root, max_image_pixels=64)).splits["test"]) == 4


def test_max_image_pixels_must_be_positive_and_within_pillows_limit() -> None:
    with pytest.raises(ConfigError, match=r"^max_image_pixels: must be in 1\.\.178,956,970"):
        cfg(None, max_image_pixels=0)
    with pytest.raises(ConfigError, match="got 200,000,000"):
        cfg(None, max_image_pixels=200_000_000)


def test_long_and_odd_class_names_pass_and_a_control_character_does_not(
    tmp_path: Path,
) -> None:
    """Class names are never MLflow metric keys (per-class figures are one table): a
    255-character folder name and names that differ only in punctuation are fine."""
    root = tmp_path / "imgs"
    names = ["a" * 255, "cat dog", "cat+dog"]
    for i, name in enumerate(names):
        write(root / name / "0.png", pixels(i))
        write(root / name / "1.png", pixels(i + 50))
    assert load_imagefolder(cfg(root)).class_names == sorted(names)
    write(root / "tab\there" / "0.png", pixels(9))
    assert message(root) == (
        f"{root}/'tab\\there': class folder name has a control character; rename the folder"
    )


def test_configured_class_names_are_checked_too() -> None:
    with pytest.raises(ConfigError) as info:
        cfg(None, class_names=["a", "b" * 300 + "\n"])
    assert str(info.value).startswith(f"class_names: {'b' * 60!r}... has a control character")


def many(root: Path, per_class: int = 13) -> Path:
    """Flat class folders of RGB PNGs of other sizes (resized), enough for several chunks."""
    rng = np.random.default_rng(3)
    for name in ["a", "b", "c"]:
        for i in range(per_class):
            size = int(rng.integers(6, 12))
            write(root / name / f"{i:02d}.png", rng.integers(0, 256, (size, size, 3), np.uint8))
    return root


def written(root: Path, out: Path, **overrides: Any) -> tuple[dict[str, str], Any]:
    out.mkdir()
    ds = write_imagefolder(cfg(root, channels=3, **overrides), out)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.npy")}
    return files, ds


@pytest.mark.parametrize("workers", [2, 3])
def test_pool_writes_the_same_shards_and_index_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(imagefolder, "CHUNK_FILES", 4)  # 39 files: 10 chunks, uneven last
    root = many(tmp_path / "imgs")
    serial, one = written(root, (tmp_path / "one").resolve(), workers=1)
    pooled, ds = written(root, (tmp_path / "pool").resolve(), workers=workers)
    assert serial == pooled and list(serial) == ["all-00000.npy"]
    for name in ("train", "test"):
        a, b = one.splits[name], ds.splits[name]
        for column in ("labels", "shard", "offset", "ids", "hashes"):
            assert getattr(a, column).tolist() == getattr(b, column).tolist(), column
    assert ds.extra["resized"] == one.extra["resized"] > 0
    assert len(ds.splits["train"]) + len(ds.splits["test"]) == 39
    assert ds.splits["train"].ids[0] == "a/00.png"


def test_a_worker_error_is_the_same_one_line_and_skipping_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imagefolder, "CHUNK_FILES", 4)
    root = many(tmp_path / "imgs")
    bad = root / "b" / "05.png"
    bad.write_bytes(b"not a png")
    later = root / "c" / "07.png"
    later.write_bytes(b"nor this")
    for workers in (1, 3):
        with pytest.raises(DataError) as info:
            write_imagefolder(cfg(root, workers=workers), tmp_path)
        assert str(info.value) == (
            f"{bad}: not an image file (Pillow cannot identify it); fix or remove it, or set "
            "data.skip_unreadable=true to skip such files"
        )
    ds = load_imagefolder(cfg(root, workers=3, skip_unreadable=True))
    assert [s["file"] for s in ds.extra["skipped"]] == ["b/05.png", "c/07.png"]
    assert sum(len(s) for s in ds.splits.values()) == 37


def test_workers_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"workers: must be >= 0"):
        cfg(None, workers=-1)
