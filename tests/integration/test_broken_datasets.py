"""A corpus of broken datasets against the ingest and validate stages, in this process.

Each broken input is generated here (small image folders, IDX files, or a raw
dataset folder written directly, for what ingest would never produce). For each
one the stage that should stop it fails (or warns, per severity) with a message
naming the problem, and nothing downstream changes: a failed ingest leaves the
previous raw/ as it was; a failed validation makes preprocess refuse, leaving
processed/ as it was. The good datasets go through all three stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pipelines.ingest import main as ingest
from pipelines.preprocess import main as preprocess
from pipelines.validate import main as validate

from mlpipe.dataset import ImageDataset, ImageSplit, load_dataset, save_dataset
from mlpipe.ingest.idx import encode_idx, write_idx

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SIZE = 8  # image side for the image-folder and synthetic cases
CLASSES = ["bird", "cat", "dog"]


# --- inputs ---------------------------------------------------------------


def noise(seed: int, shape: tuple[int, ...] = (SIZE, SIZE)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def image_folder(root: Path, nested: bool = True, per_class: int = 4) -> Path:
    """3 classes of random PNGs (one JPEG each), under train/ and test/ or flat."""
    seed = 0
    for split in ["train", "test"] if nested else [""]:
        for name in CLASSES:
            for i in range(per_class):
                seed += 1
                fmt, ext = ("JPEG", "jpg") if i == 0 else ("PNG", "png")
                write_image(root / split / name / f"{i}.{ext}", noise(seed), fmt)
    return root


def write_idx_folder(folder: Path, n_train: int = 30, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8)
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return folder


def synthetic(size: int = SIZE, channels: int = 1, per_class: int = 6) -> ImageDataset:
    """A raw dataset as ingest would write it: random images, classes in equal numbers."""
    n = per_class * len(CLASSES)
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    splits = {
        name: ImageSplit(noise(seed, (n, channels, size, size)), labels.copy())
        for seed, name in enumerate(["train", "test"])
    }
    return ImageDataset(splits, list(CLASSES), "synthetic")


# --- params and stages ----------------------------------------------------


def conf(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "conf" / "data" / f"{name}.yaml").read_text())


def folder_data(path: Path, **overrides: Any) -> dict[str, Any]:
    values = {"path": str(path), "image_size": SIZE}
    return {**conf("imagefolder"), **values, **overrides}


def idx_data(folder: Path) -> dict[str, Any]:
    return {**conf("fashion_mnist"), "path": str(folder), "urls": [], "verify_checksums": False}


def synthetic_data() -> dict[str, Any]:
    return folder_data(Path("unused"), class_names=list(CLASSES))


def write_params(path: Path, data: dict[str, Any], **validate: Any) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = data
    params["preprocess"] = {**params["preprocess"], "val_fraction": 0.25}
    params["validate"] = {**params["validate"], **validate}
    path.write_text(yaml.safe_dump(params))
    return path


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Workspace:
    """Outputs of an earlier good run, which a failing stage must leave alone."""

    root: Path
    raw: Path
    processed: Path
    report: Path
    docs: Path

    def ingest(self, data: dict[str, Any], out: Path | None = None) -> int:
        params = write_params(self.root / "ingest.yaml", data)
        return ingest(["--params", str(params), "--out", str(out or self.raw)])

    def validate(self, raw: Path, data: dict[str, Any], docs: bool = False, **checks: Any) -> int:
        params = write_params(self.root / "validate.yaml", data, **checks)
        argv = ["--params", str(params), "--raw", str(raw), "--report", str(self.report)]
        return validate(argv + (["--data-docs", str(self.docs)] if docs else []))

    def preprocess(self, raw: Path, data: dict[str, Any]) -> int:
        params = write_params(self.root / "preprocess.yaml", data)
        argv = ["--params", str(params), "--raw", str(raw), "--validation", str(self.report)]
        return preprocess([*argv, "--out", str(self.processed)])

    def report_json(self) -> dict[str, Any]:
        return json.loads(self.report.read_text())


def workspace(root: Path) -> Workspace:
    return Workspace(root, root / "raw", root / "processed", root / "v.json", root / "docs")


@pytest.fixture(scope="module")
def good_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good image folder ingested, validated and preprocessed, once."""
    w = workspace(tmp_path_factory.mktemp("good"))
    data = folder_data(image_folder(w.root / "good"))
    assert w.ingest(data) == 0
    assert w.validate(w.raw, data) == 0
    assert w.preprocess(w.raw, data) == 0
    return w.root


@pytest.fixture
def ws(good_outputs: Path, tmp_path: Path) -> Workspace:
    """A copy of the good run's outputs, for one test to (fail to) change."""
    w = workspace(tmp_path)
    shutil.copytree(good_outputs / "raw", w.raw)
    shutil.copytree(good_outputs / "processed", w.processed)
    shutil.copy(good_outputs / "v.json", w.report)
    return w


def docs_text(docs: Path, table: str) -> str:
    """The visible text of the Data Docs page of `table`'s validation."""
    (page,) = (docs / "validations" / table).rglob("*.html")
    html = re.sub(r"<script.*?</script>", " ", page.read_text(), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def error_lines(capsys: pytest.CaptureFixture[str], stage: str) -> str:
    err = capsys.readouterr().err
    assert f"{stage}: error: " in err, err
    return err


# --- ingest stops it ------------------------------------------------------


def corrupt_png(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs")
    bad = root / "train" / "cat" / "2.png"
    bad.write_bytes(bad.read_bytes()[:70])  # cut inside the pixel data
    return folder_data(root), f"{bad}: corrupt or truncated image (image file is truncated"


def non_image_file(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs")
    bad = root / "test" / "dog" / "labels.csv"
    bad.write_text("file,label\n")
    return folder_data(root), f"{bad}: not an image file (Pillow cannot identify it)"


def empty_class_folder(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs", nested=False)
    (root / "horse").mkdir()
    return folder_data(root), f"{root / 'horse'}: empty class folder (no image files)"


def empty_dataset(tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "imgs").mkdir()
    return folder_data(tmp / "imgs"), f"{tmp / 'imgs'}: empty dataset: no class folders"


def all_files_unreadable(tmp: Path) -> tuple[dict[str, Any], str]:
    root = tmp / "imgs"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(b"not a png")
    return folder_data(root, skip_unreadable=True), f"data.path={root}: no readable images"


def wrong_size_not_resized(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs")
    big = write_image(root / "train" / "bird" / "9.png", noise(99, (SIZE + 4, SIZE + 4)))
    message = f"{big}: 12x12 pixels, expected 8x8 (data.image_size); set data.resize=true"
    return folder_data(root, resize=False), message


def class_names_mismatch(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs")
    return folder_data(root, class_names=["bird", "cat", "cow"]), (
        f"data.class_names does not match the class folders in {root}: no folder for 'cow'; "
        "folders not in the list: 'dog'"
    )


def no_path(tmp: Path) -> tuple[dict[str, Any], str]:
    return {**conf("imagefolder"), "path": None}, "data.path: required for data=imagefolder"


def truncated_idx(tmp: Path) -> tuple[dict[str, Any], str]:
    folder = write_idx_folder(tmp / "fm")
    (folder / "train-images-idx3-ubyte.gz").unlink()
    bad = folder / "train-images-idx3-ubyte"
    bad.write_bytes(encode_idx(noise(1, (30, 28, 28)))[: 16 + 1000])
    return idx_data(folder), f"{bad}: truncated: header says 30x28x28 = 23520 bytes, found 1000"


def idx_count_mismatch(tmp: Path) -> tuple[dict[str, Any], str]:
    folder = write_idx_folder(tmp / "fm")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.arange(9, dtype=np.uint8))
    images = folder / "t10k-images-idx3-ubyte.gz"
    return idx_data(folder), f"{images} holds 10 images but {labels} holds 9 labels"


def idx_label_out_of_range(tmp: Path) -> tuple[dict[str, Any], str]:
    folder = write_idx_folder(tmp / "fm")
    labels = folder / "train-labels-idx1-ubyte.gz"
    values = (np.arange(30) % 10).astype(np.uint8)
    values[-1] = 37
    write_idx(labels, values)
    return idx_data(folder), f"{labels}: labels span 0..37 but data.class_names has 10 names"


def link_out_of_the_folder(tmp: Path) -> tuple[dict[str, Any], str]:
    root = image_folder(tmp / "imgs")
    target = write_image(tmp / "elsewhere" / "x.png", noise(77))
    link = root / "train" / "cat" / "9.png"
    link.symlink_to(target)
    return folder_data(root), (
        f"{link}: symbolic link to {target}, outside data.path={root}; copy what it points "
        "to into the folder, or set data.follow_external_links=true"
    )


def pixel_bomb(tmp: Path) -> tuple[dict[str, Any], str]:
    """A 16-bit PNG whose header claims 13,000 x 13,000 pixels (2.2 GB to decode)."""
    root = image_folder(tmp / "imgs")
    bomb = write_image(root / "test" / "dog" / "bomb.png", noise(5).astype(np.uint16) << 8)
    data = bytearray(bomb.read_bytes())
    data[16:24] = struct.pack(">II", 13_000, 13_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))
    return folder_data(root), (
        f"{bomb}: 13000x13000 = 169,000,000 pixels, more than data.max_image_pixels=50,000,000"
    )


INGEST_FAILURES: list[Callable[[Path], tuple[dict[str, Any], str]]] = [
    corrupt_png,
    non_image_file,
    empty_class_folder,
    empty_dataset,
    all_files_unreadable,
    wrong_size_not_resized,
    class_names_mismatch,
    no_path,
    truncated_idx,
    idx_count_mismatch,
    idx_label_out_of_range,
    link_out_of_the_folder,
    pixel_bomb,
]


@pytest.mark.parametrize("broken", INGEST_FAILURES, ids=[f.__name__ for f in INGEST_FAILURES])
def test_ingest_stops_bad_input_and_keeps_raw(
    ws: Workspace, capsys: pytest.CaptureFixture[str], broken: Any
) -> None:
    data, problem = broken(ws.root)
    before = digest(ws.raw)
    capsys.readouterr()
    assert ws.ingest(data) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ingest: ")]
    assert len(lines) == 1 and lines[0].startswith("ingest: error: "), lines
    assert problem in lines[0]
    assert digest(ws.raw) == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".raw")]


def test_skip_unreadable_skips_and_lists_the_bad_files(ws: Workspace, caplog: Any) -> None:
    data, _ = corrupt_png(ws.root)
    (ws.root / "imgs" / "test" / "dog" / "notes.txt").write_text("hello\n")
    out = ws.root / "raw-skipping"
    with caplog.at_level(logging.WARNING):
        assert ws.ingest({**data, "skip_unreadable": True}, out) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [s["file"] for s in meta["skipped"]] == ["train/cat/2.png", "test/dog/notes.txt"]
    assert meta["splits"] == {"train": 11, "test": 12}
    assert any("skipped 2 unreadable file(s)" in r.getMessage() for r in caplog.records)
    assert ws.validate(out, data) == 0


# --- validate stops it ----------------------------------------------------


def raw_from(ws: Workspace, ds: ImageDataset) -> Path:
    save_dataset(ds, ws.root / "bad-raw")
    return ws.root / "bad-raw"


def ingested(ws: Workspace, data: dict[str, Any]) -> Path:
    assert ws.ingest(data, ws.root / "bad-raw") == 0
    return ws.root / "bad-raw"


def gate_fails(ws: Workspace, raw: Path, data: dict[str, Any], capsys: Any, **checks: Any) -> str:
    """Validate fails; preprocess then refuses and processed/ stays as it was."""
    before = digest(ws.processed), digest(raw)
    capsys.readouterr()
    assert ws.validate(raw, data, **checks) == 1
    err = error_lines(capsys, "validate")
    report = ws.report_json()
    assert report["success"] is False and report["failed"] >= 1
    assert ws.preprocess(raw, data) == 1
    assert "validation did not pass" in error_lines(capsys, "preprocess")
    assert (digest(ws.processed), digest(raw)) == before
    return err


def test_label_out_of_range(ws: Workspace, capsys: Any) -> None:
    ds = synthetic()
    ds.splits["train"].labels[[2, 5]] = 7
    err = gate_fails(ws, raw_from(ws, ds), synthetic_data(), capsys)
    assert (
        "label_set: label in {0..2}: 2 of 36 rows outside, e.g. ids train-00000002, "
        "train-00000005 (values 7)"
    ) in err


def test_missing_class_in_a_split(ws: Workspace, capsys: Any) -> None:
    root = image_folder(ws.root / "imgs")
    shutil.rmtree(root / "test" / "cat")
    err = gate_fails(ws, ingested(ws, folder_data(root)), folder_data(root), capsys)
    assert (
        "class_coverage: every class has >= 1 image in each split (train, test): "
        "1 of 6 split/class pairs outside, e.g. ids test/cat (values 0)"
    ) in err
    assert "1 expectation(s) failed" in err


def test_wrong_image_size(ws: Workspace, capsys: Any) -> None:
    err = gate_fails(ws, raw_from(ws, synthetic(size=SIZE + 2)), synthetic_data(), capsys)
    assert "shape: height == 8: 36 of 36 rows outside, e.g. ids train-00000000" in err
    assert "shape: width == 8: 36 of 36 rows outside" in err and "(values 10)" in err


def test_wrong_number_of_channels(ws: Workspace, capsys: Any) -> None:
    err = gate_fails(ws, raw_from(ws, synthetic(channels=3)), synthetic_data(), capsys)
    assert "shape: channels == 1: 36 of 36 rows outside" in err and "(values 3)" in err
    assert "1 expectation(s) failed" in err


def test_duplicated_ids(ws: Workspace, capsys: Any) -> None:
    ds = synthetic()
    for name, split in ds.splits.items():
        split.ids = np.array([f"{name}/{i}.png" for i in range(len(split))])
    ds.splits["test"].ids[4] = "test/1.png"  # type: ignore[index]
    err = gate_fails(ws, raw_from(ws, ds), synthetic_data(), capsys)
    assert "unique_ids: id unique: 2 of 36 rows duplicated, e.g. ids test/1.png, test/1.png" in err


def test_train_test_leakage(ws: Workspace, capsys: Any) -> None:
    root = image_folder(ws.root / "imgs")
    shutil.copy(root / "train" / "dog" / "3.png", root / "test" / "dog" / "9.png")
    shutil.copy(root / "train" / "bird" / "2.png", root / "test" / "cat" / "8.png")
    err = gate_fails(ws, ingested(ws, folder_data(root)), folder_data(root), capsys)
    assert (
        "leakage: at most 0 images outside train identical to a train image: observed 2, "
        "e.g. ids test/cat/8.png, test/dog/9.png"
    ) in err
    (result,) = [r for r in ws.report_json()["results"] if r["check"] == "leakage"]
    assert (result["observed"], result["example_ids"]) == (2, ["test/cat/8.png", "test/dog/9.png"])


def test_all_blank_images(ws: Workspace, capsys: Any) -> None:
    ds = synthetic()
    for offset, split in enumerate(ds.splits.values()):  # constant, all different greys
        greys = np.arange(len(split), dtype=np.uint8) * 7 + offset * 3
        split.images[:] = greys[:, None, None, None]
    err = gate_fails(ws, raw_from(ws, ds), synthetic_data(), capsys)
    for split in ["train", "test"]:
        assert (
            f"blank: {split}: at most 1% blank images (pixel_min == pixel_max): "
            f"18 of 18 rows blank, e.g. ids {split}-00000000, {split}-00000001"
        ) in err
    assert "2 expectation(s) failed" in err


def test_duplicate_images_within_a_split(ws: Workspace, capsys: Any) -> None:
    ds = synthetic()
    ds.splits["train"].images[[3, 9]] = ds.splits["train"].images[0]
    err = gate_fails(ws, raw_from(ws, ds), synthetic_data(), capsys)
    assert (
        "duplicates: train: at most 1% of images with an identical copy (same sha1): "
        "3 of 18 rows duplicated, e.g. ids train-00000000, train-00000003, train-00000009"
    ) in err


def test_empty_idx_split(ws: Workspace, capsys: Any) -> None:
    folder = write_idx_folder(ws.root / "fm", n_test=0)
    data = idx_data(folder)
    err = gate_fails(ws, ingested(ws, data), data, capsys)
    assert "rows: test rows >= 1: observed 0" in err
    assert "class_coverage: every class has >= 1 image in each split (train, test): 10 of 20" in err


def test_row_bounds(ws: Workspace, capsys: Any) -> None:
    err = gate_fails(
        ws, raw_from(ws, synthetic()), synthetic_data(), capsys, rows={"train": [20, 100]}
    )
    assert "rows: train rows in [20, 100]: observed 18" in err


def imbalanced() -> ImageDataset:
    ds = synthetic(per_class=12)
    keep = np.r_[0:12, 12:14, 24:36]  # 12 birds, 2 cats, 12 dogs
    train = ds.splits["train"]
    ds.splits["train"] = ImageSplit(train.images[keep], train.labels[keep])
    return ds


def test_class_imbalance_fails_as_error(ws: Workspace, capsys: Any) -> None:
    raw = raw_from(ws, imbalanced())
    err = gate_fails(ws, raw, synthetic_data(), capsys, max_class_ratio=5)
    assert (
        "class_balance: no class of a split more than 5x smaller than its largest: "
        "1 of 6 split/class pairs outside, e.g. ids train/cat (values 6)"
    ) in err


def test_class_imbalance_as_warn_goes_on(ws: Workspace, capsys: Any, caplog: Any) -> None:
    raw = raw_from(ws, imbalanced())
    with caplog.at_level(logging.WARNING):
        checks = {"class_balance": "warn"}
        assert ws.validate(raw, synthetic_data(), checks=checks, max_class_ratio=5) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("check failed (warn): class_balance: " in m and "train/cat" in m for m in warned)
    report = ws.report_json()
    assert (report["success"], report["failed"], report["warnings"]) == (True, 0, 1)
    assert ws.preprocess(raw, synthetic_data()) == 0


def test_failed_validation_still_writes_data_docs(ws: Workspace, capsys: Any) -> None:
    ds = synthetic()
    ds.splits["test"].labels[0] = 5
    assert ws.validate(raw_from(ws, ds), synthetic_data(), docs=True) == 1
    assert (ws.docs / "index.html").is_file()
    text = docs_text(ws.docs, "images")
    assert "Status: Failed" in text and "Unsuccessful Expectations 1 " in text
    assert "Status: Succeeded" in docs_text(ws.docs, "classes")


# --- good datasets pass ---------------------------------------------------


@pytest.mark.parametrize("layout", ["nested", "flat", "digits"])
def test_good_datasets_pass_every_stage(ws: Workspace, layout: str, capsys: Any) -> None:
    if layout == "digits":
        data = conf("digits")
    else:
        data = folder_data(image_folder(ws.root / "imgs", nested=layout == "nested", per_class=10))
    raw = ws.root / f"raw-{layout}"
    assert ws.ingest(data, raw) == 0
    assert ws.validate(raw, data, docs=True) == 0, capsys.readouterr().err
    report = ws.report_json()
    assert report["success"] is True
    assert report["evaluated"] == report["passed"] >= 40
    assert (report["failed"], report["warnings"]) == (0, 0)
    assert (ws.docs / "index.html").is_file()
    assert {p.name for p in (ws.docs / "validations").iterdir()} == {"images", "classes"}
    assert "Status: Succeeded" in docs_text(ws.docs, "images")
    assert ws.preprocess(raw, data) == 0
    processed = load_dataset(ws.processed)
    assert sorted(processed.splits) == ["test", "train", "val"]
    if layout != "digits":
        assert processed.class_names == CLASSES
        assert processed.image_shape == (1, SIZE, SIZE)
