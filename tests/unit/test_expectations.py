import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlpipe.config import to_dataclass
from mlpipe.errors import ConfigError
from mlpipe.ingest.config import DataConfig
from mlpipe.validate.config import Severity, ValidateChecks, ValidateConfig
from mlpipe.validate.expectations import (
    BUILDERS,
    CLASSES,
    IMAGES,
    build_specs,
    check_names,
    describe_int_set,
    mostly,
)
from mlpipe.validate.table import TABLE_COLUMNS, TABLE_DTYPES

REPO = Path(__file__).resolve().parents[2]

TEN = [f"c{i}" for i in range(10)]


def data(classes=TEN, channels=1, image_size=28) -> DataConfig:
    return DataConfig(class_names=classes, channels=channels, image_size=image_size)


def by_check(specs, check):
    return [s for s in specs if s.check == check]


def test_every_check_has_a_builder():
    assert set(BUILDERS) == set(check_names())


def test_default_config_builds_all_checks_in_field_order():
    specs = build_specs(ValidateConfig(), data())
    order = list(dict.fromkeys(s.check for s in specs))
    assert order == check_names()
    assert all(s.severity is Severity.error for s in specs)
    assert len(by_check(specs, "not_null")) == len(TABLE_COLUMNS)
    json.dumps([(s.kwargs, s.where) for s in specs])  # plain values only
    assert {s.table for s in specs} == {IMAGES, CLASSES}


def test_schema_expects_exactly_the_table_columns():
    (spec,) = by_check(build_specs(ValidateConfig(), data()), "schema")
    assert spec.kind == "ExpectTableColumnsToMatchSet"
    assert spec.kwargs == {"column_set": TABLE_COLUMNS, "exact_match": True}


def test_label_set_covers_the_class_indices():
    (spec,) = by_check(build_specs(ValidateConfig(), data()), "label_set")
    assert spec.kind == "ExpectColumnValuesToBeInSet"
    assert spec.kwargs == {"column": "label", "value_set": list(range(10))}
    assert spec.description == "label in {0..9}"
    (two,) = by_check(build_specs(ValidateConfig(), data(classes=["a", "b"])), "label_set")
    assert two.description == "label in {0, 1}"


def test_shape_uses_configured_channels_and_size():
    specs = by_check(build_specs(ValidateConfig(), data(channels=3, image_size=32)), "shape")
    assert {s.kwargs["column"]: s.kwargs["value_set"] for s in specs} == {
        "channels": [3],
        "height": [32],
        "width": [32],
    }
    assert [s.description for s in specs] == ["channels == 3", "height == 32", "width == 32"]


def test_pixel_range_uses_configured_bounds():
    cfg = ValidateConfig(pixel_min=10, pixel_max=200)
    low, high = by_check(build_specs(cfg, data()), "pixel_range")
    assert low.kwargs == {"column": "pixel_min", "min_value": 10}
    assert high.kwargs == {"column": "pixel_max", "max_value": 200}
    assert (low.description, high.description) == ("pixel_min >= 10", "pixel_max <= 200")


def test_off_skips_a_check_and_warn_is_carried():
    checks = ValidateChecks(not_null=Severity.off, shape=Severity.warn)
    specs = build_specs(ValidateConfig(checks=checks), data())
    assert by_check(specs, "not_null") == []
    assert {s.severity for s in by_check(specs, "shape")} == {Severity.warn}
    assert {s.severity for s in by_check(specs, "label_set")} == {Severity.error}


def test_all_off_gives_an_empty_suite():
    off = ValidateChecks(**{name: Severity.off for name in check_names()})
    assert build_specs(ValidateConfig(checks=off), data()) == []


def test_types_follow_the_table_dtypes():
    specs = by_check(build_specs(ValidateConfig(), data()), "types")
    assert {s.kwargs["column"]: s.kwargs["type_"] for s in specs} == TABLE_DTYPES
    assert all(s.kind == "ExpectColumnValuesToBeOfType" for s in specs)


def test_unique_ids():
    (spec,) = by_check(build_specs(ValidateConfig(), data()), "unique_ids")
    assert (spec.kind, spec.kwargs, spec.rejected) == (
        "ExpectColumnValuesToBeUnique",
        {"column": "id"},
        "duplicated",
    )


def test_rows_checks_split_names_and_per_split_bounds():
    cfg = ValidateConfig(rows={"train": [100, None], "test": [10, 20]})
    names, train, test = by_check(build_specs(cfg, data()), "rows")
    assert names.kwargs == {"column": "split", "value_set": ["train", "test"]}
    assert names.description == "split in {train, test}"
    assert train.kind == test.kind == "ExpectTableRowCountToBeBetween"
    assert (train.kwargs, train.where, train.description) == (
        {"min_value": 100, "max_value": None},
        {"split": "train"},
        "train rows >= 100",
    )
    assert (test.kwargs, test.description) == (
        {"min_value": 10, "max_value": 20},
        "test rows in [10, 20]",
    )


def test_class_checks_run_on_the_class_table():
    cfg = ValidateConfig(min_class_count=5, max_class_ratio=3.0)
    (coverage,) = by_check(build_specs(cfg, data()), "class_coverage")
    (balance,) = by_check(build_specs(cfg, data()), "class_balance")
    assert coverage.table == balance.table == CLASSES
    assert coverage.kwargs == {"column": "count", "min_value": 5}
    assert coverage.description == "every class has >= 5 images in each split (train, test)"
    assert balance.kwargs == {"column": "imbalance", "max_value": 3.0}
    assert balance.description == "no class of a split more than 3x smaller than its largest"


def test_blank_and_duplicates_are_per_split_fractions():
    cfg = ValidateConfig(max_blank_fraction=0.05, max_duplicate_fraction=0.0)
    specs = build_specs(cfg, data())
    blank = by_check(specs, "blank")
    assert [s.where for s in blank] == [{"split": "train"}, {"split": "test"}]
    assert blank[0].kind == "ExpectColumnPairValuesAToBeGreaterThanB"
    assert blank[0].kwargs == {
        "column_A": "pixel_max",
        "column_B": "pixel_min",
        "or_equal": False,
        "mostly": 0.95,
    }
    assert blank[0].description == "train: at most 5% blank images (pixel_min == pixel_max)"
    dups = by_check(specs, "duplicates")
    assert [s.kwargs for s in dups] == [{"column": "sha1", "mostly": 1.0}] * 2
    assert dups[1].description == "test: at most 0% of images with an identical copy (same sha1)"
    assert mostly(0.01) == 0.99 and mostly(0.0) == 1.0


def test_leakage_is_a_count_that_names_the_flagged_rows():
    (spec,) = by_check(build_specs(ValidateConfig(max_leakage=3), data()), "leakage")
    assert spec.kind == "ExpectColumnSumToBeBetween"
    assert spec.kwargs == {"column": "leaked", "min_value": 0, "max_value": 3}
    assert spec.flag == "leaked"


def test_describe_int_set():
    assert describe_int_set([0, 1, 2, 3]) == "{0..3}"
    assert describe_int_set([1, 4, 7]) == "{1, 4, 7}"
    assert describe_int_set([5]) == "{5}"


def test_importing_the_stage_does_not_import_great_expectations():
    code = "import sys, pipelines.validate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("values", "key", "detail"),
    [
        ({"rows": {"train": [5, 2]}}, "validate.rows.train", "0 <= min <= max"),
        ({"rows": {"test": [1]}}, "validate.rows.test", "got [1]"),
        ({"rows": {"train": [None, 3]}}, "validate.rows.train", "[min, max]"),
        ({"max_class_ratio": 0.5}, "validate.max_class_ratio", ">= 1"),
        ({"max_blank_fraction": 1.5}, "validate.max_blank_fraction", "[0, 1]"),
        ({"max_duplicate_fraction": -0.1}, "validate.max_duplicate_fraction", "[0, 1]"),
        ({"max_leakage": -1}, "validate.max_leakage", ">= 0"),
        ({"min_class_count": -1}, "validate.min_class_count", ">= 0"),
        ({"checks": {"leakage": "maybe"}}, "validate.checks.leakage", "maybe"),
    ],
)
def test_bad_validate_values_name_the_key(values, key, detail):
    with pytest.raises(ConfigError) as info:
        to_dataclass(ValidateConfig, values, "params.yaml: validate")
    assert str(info.value).startswith(f"params.yaml: {key}: ")
    assert detail in str(info.value)


def test_default_validate_conf_matches_the_dataclass():
    conf = yaml.safe_load((REPO / "conf" / "validate" / "default.yaml").read_text())
    assert set(conf["checks"]) == set(check_names())
    assert to_dataclass(ValidateConfig, conf, "conf") == ValidateConfig()
