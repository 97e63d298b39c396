"""The validate stage end to end with real Great Expectations, in this process.

GX is imported once (seconds); every case then runs the stage's `main` on a
tiny synthetic dataset and checks exit code, stderr and the report file.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipelines.validate import main

from mlpipe.dataset import ImageDataset, ImageSplit, load_dataset, save_dataset
from mlpipe.ingest.config import DataConfig
from mlpipe.validate.config import ValidateConfig
from mlpipe.validate.expectations import build_specs
from mlpipe.validate.gx import run_suite
from mlpipe.validate.table import class_table, image_table

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLASSES = 10
PER_CLASS = 6


def synthetic(size=28, channels=1, seed=0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    n = CLASSES * PER_CLASS
    splits = {
        name: ImageSplit(
            rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8),
            np.repeat(np.arange(CLASSES, dtype=np.int64), PER_CLASS),
        )
        for name in ("train", "test")
    }
    return ImageDataset(splits, [f"class{i}" for i in range(CLASSES)], "synthetic")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("validate")


@pytest.fixture(scope="module")
def good_raw(root) -> Path:
    save_dataset(synthetic(), root / "good")
    return root / "good"


def write_params(path: Path, **validate) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(image_size=28, channels=1, class_names=synthetic().class_names)
    params["validate"] = {**params["validate"], **validate}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def params(root) -> Path:
    return write_params(root / "params.yaml")


def run(params: Path, raw: Path, report: Path, capsys) -> tuple[int, str, dict]:
    code = main(["--params", str(params), "--raw", str(raw), "--report", str(report)])
    err = capsys.readouterr().err
    return code, err, json.loads(report.read_text()) if report.exists() else {}


def failed(report: dict, check: str) -> list[dict]:
    return [r for r in report["results"] if r["check"] == check and not r["success"]]


def test_good_data_passes(params, good_raw, tmp_path, capsys):
    code, err, report = run(params, good_raw, tmp_path / "validation.json", capsys)
    assert code == 0, err
    assert "error" not in err
    assert report["success"] is True
    assert report["evaluated"] == report["passed"] == len(report["results"]) > 0
    assert (report["failed"], report["warnings"]) == (0, 0)


def test_report_is_byte_identical_across_runs(params, good_raw, tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    run(params, good_raw, first, capsys)
    run(params, good_raw, second, capsys)
    assert first.read_bytes() == second.read_bytes()


def bad_raw(root: Path, name: str, dataset: ImageDataset) -> Path:
    save_dataset(dataset, root / name)
    return root / name


def test_label_out_of_range_fails_with_ids_and_values(root, params, good_raw, tmp_path, capsys):
    ds = load_dataset(good_raw)
    ds.splits["train"].labels[[17, 40]] = [12, 37]
    raw = bad_raw(root, "labels", ds)
    code, err, report = run(params, raw, tmp_path / "validation.json", capsys)
    assert code == 1
    assert "validate: error: 1 expectation(s) failed:" in err
    assert (
        "label_set: label in {0..9}: 2 of 120 rows outside, "
        "e.g. ids train-00000017, train-00000040 (values 12, 37)"
    ) in err
    assert report["success"] is False and report["failed"] == 1
    (result,) = failed(report, "label_set")
    assert result["unexpected_count"] == 2
    assert result["example_ids"] == ["train-00000017", "train-00000040"]


def test_wrong_image_size_fails(root, params, tmp_path, capsys):
    raw = bad_raw(root, "size32", synthetic(size=32))
    code, err, report = run(params, raw, tmp_path / "validation.json", capsys)
    assert code == 1
    assert "validate: error: 2 expectation(s) failed:" in err
    assert "shape: height == 28: 120 of 120 rows outside" in err
    assert "shape: width == 28: 120 of 120 rows outside" in err
    assert "(values 32)" in err
    assert report["success"] is False
    assert [r["description"] for r in failed(report, "shape")] == ["height == 28", "width == 28"]


def test_wrong_channel_count_fails(root, params, tmp_path, capsys):
    raw = bad_raw(root, "rgb", synthetic(channels=3))
    code, err, report = run(params, raw, tmp_path / "validation.json", capsys)
    assert code == 1
    assert "shape: channels == 1: 120 of 120 rows outside" in err
    assert "(values 3)" in err
    assert report["success"] is False
    assert [r["example_values"] for r in failed(report, "shape")] == [[3]]


def test_failed_warn_check_is_logged_and_recorded(root, good_raw, tmp_path, capsys, caplog):
    params = write_params(tmp_path / "params.yaml", pixel_max=200, checks={"pixel_range": "warn"})
    with caplog.at_level(logging.WARNING):
        code, err, report = run(params, good_raw, tmp_path / "validation.json", capsys)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pixel_range: pixel_max <= 200: 120 of 120 rows outside" in m for m in warned)
    assert any("(values 255" in m for m in warned)
    assert report["success"] is True
    assert (report["failed"], report["warnings"]) == (0, 1)
    (result,) = failed(report, "pixel_range")
    assert result["severity"] == "warn"


def test_check_set_off_is_not_evaluated(root, good_raw, tmp_path, capsys):
    ds = load_dataset(good_raw)
    ds.splits["test"].labels[0] = 12
    raw = bad_raw(root, "labels-off", ds)
    params = write_params(tmp_path / "params.yaml", checks={"label_set": "off"})
    code, err, report = run(params, raw, tmp_path / "validation.json", capsys)
    assert code == 0, err
    assert not [r for r in report["results"] if r["check"] == "label_set"]


def test_bad_params_fail_before_touching_the_report(good_raw, tmp_path, capsys):
    report = tmp_path / "validation.json"
    report.write_text("previous\n")
    params = write_params(tmp_path / "params.yaml", pixel_min=300)
    code = main(["--params", str(params), "--raw", str(good_raw), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 1
    assert "validate: error:" in err and "pixel_min" in err and "300" in err
    assert report.read_text() == "previous\n"


def test_missing_raw_folder_names_it(params, tmp_path, capsys):
    code, err, _ = run(params, tmp_path / "nowhere", tmp_path / "validation.json", capsys)
    assert code == 1
    assert "validate: error:" in err and "nowhere/meta.json: missing" in err


def test_missing_column_fails_schema_and_its_checks_without_breaking_others(good_raw):
    table = image_table(load_dataset(good_raw)).drop(columns=["sha1"])
    table.loc[3, "label"] = 12
    data = DataConfig(class_names=synthetic().class_names)
    classes = class_table(table, ["train", "test"], data.class_names)
    report = run_suite({"images": table, "classes": classes}, build_specs(ValidateConfig(), data))
    lines = report.failure_lines()
    assert not report.success
    assert lines[0].startswith("schema: columns are exactly {id, split, label")
    assert lines[0].endswith("; missing: sha1")
    assert any(x.startswith("types: sha1 is str: could not be evaluated: ") for x in lines)
    assert any(x.startswith("not_null: sha1 not null: could not be evaluated: ") for x in lines)
    assert any("sha1" in x and "does not exist" in x for x in lines)
    assert (
        "label_set: label in {0..9}: 1 of 120 rows outside, e.g. ids train-00000003 (values 12)"
        in lines
    )
    dups = [x for x in lines if x.startswith("duplicates: ")]
    assert len(dups) == 2 and all("could not be evaluated" in x for x in dups)
    assert report.to_dict()["failed"] == len(lines) == 6


def test_a_table_without_rows_fails_row_counts_not_the_run(params, tmp_path, capsys):
    empty = ImageSplit(np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64))
    ds = synthetic()
    ds.splits["test"] = empty
    save_dataset(ds, tmp_path / "raw")
    code, err, report = run(params, tmp_path / "raw", tmp_path / "validation.json", capsys)
    assert code == 1
    assert "rows: test rows >= 1: observed 0" in err
    assert "class_coverage: every class has >= 1 image in each split (train, test): " in err
    assert report["success"] is False


def test_data_docs_relative_path_replaced_whole(params, good_raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--params", str(params), "--raw", str(good_raw), "--report", "reports/v.json"]
    assert main([*argv, "--data-docs", "reports/data_docs"]) == 0, capsys.readouterr().err
    docs = tmp_path / "reports" / "data_docs"
    assert (docs / "index.html").is_file()
    assert len(list((docs / "validations" / "images").rglob("*.html"))) == 1
    (docs / "stale.txt").write_text("from an earlier run\n")
    assert main([*argv, "--data-docs", "reports/data_docs"]) == 0
    assert not (docs / "stale.txt").exists()
    assert len(list((docs / "validations" / "images").rglob("*.html"))) == 1
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["data_docs", "v.json"]


def test_summary_page_is_written_also_when_the_data_fails(params, tmp_path, capsys):
    ds = synthetic()
    ds.splits["test"] = ImageSplit(np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64))
    save_dataset(ds, tmp_path / "raw")
    page = tmp_path / "validate.html"
    args = ["--params", str(params), "--raw", str(tmp_path / "raw")]
    args += ["--report", str(tmp_path / "v.json"), "--summary", str(page)]
    assert main(args) == 1
    first = page.read_bytes()
    assert b"<h1>Data validation FAILED</h1>" in first and b"rows" in first
    assert main(args) == 1
    assert page.read_bytes() == first  # no run names or times: DVC sees no change
