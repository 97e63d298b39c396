import json
import subprocess
import sys

from mlpipe.config import DataConfig, Severity, ValidateChecks, ValidateConfig
from mlpipe.data.expectations import BUILDERS, build_specs, check_names, describe_int_set
from mlpipe.data.table import TABLE_COLUMNS

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
    json.dumps([s.kwargs for s in specs])  # plain values only


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


def test_describe_int_set():
    assert describe_int_set([0, 1, 2, 3]) == "{0..3}"
    assert describe_int_set([1, 4, 7]) == "{1, 4, 7}"
    assert describe_int_set([5]) == "{5}"


def test_importing_the_stage_does_not_import_great_expectations():
    code = "import sys, pipelines.validate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
