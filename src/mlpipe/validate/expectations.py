"""The validation suite as plain data: which expectations, on which columns, how severe.

Pure: no Great Expectations import. `gx.py` turns each `ExpectationSpec`
into a GX expectation by its class name (`kind`) and keyword arguments, on the
table it names (`images`: one row per image; `classes`: one row per split and
class, see `mlpipe.validate.table`), restricted to the rows where `where` holds.

Adding a check: add a field to `ValidateChecks` (config.py) and a builder to
`BUILDERS` here, under the same name. A builder takes the validate and data
settings and returns the expectations of its check, each with a human
description of what is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Protocol

from mlpipe.validate.config import Severity, ValidateChecks, ValidateConfig
from mlpipe.validate.table import TABLE_COLUMNS, TABLE_DTYPES, TRAIN

IMAGES = "images"  # the per-image table
CLASSES = "classes"  # the per-(split, class) table
TABLES = [IMAGES, CLASSES]


class DataFacts(Protocol):
    """What the suite needs to know about the data; `DataConfig` has all of it."""

    @property
    def class_names(self) -> list[str]: ...

    @property
    def channels(self) -> int: ...

    @property
    def image_size(self) -> int: ...


@dataclass
class ExpectationSpec:
    check: str  # the ValidateChecks field it belongs to, e.g. "label_set"
    severity: Severity
    kind: str  # a gx.expectations class name, e.g. "ExpectColumnValuesToBeInSet"
    kwargs: dict[str, Any]
    description: str  # what is expected, for humans: "label in {0..9}"
    table: str = IMAGES  # which table of `TABLES` it runs on
    where: dict[str, Any] | None = None  # only the rows where column == value (one pair)
    flag: str | None = None  # a bool column marking offending rows, to name some on failure
    rejected: str = "outside"  # what a failure line calls the rows it rejects


class Expect(NamedTuple):
    kind: str
    kwargs: dict[str, Any]
    description: str
    table: str = IMAGES
    where: dict[str, Any] | None = None
    flag: str | None = None
    rejected: str = "outside"


Builder = Callable[[ValidateConfig, DataFacts], list[Expect]]


def build_specs(cfg: ValidateConfig, data: DataFacts) -> list[ExpectationSpec]:
    """Every enabled check's expectations, in `ValidateChecks` field order."""
    specs = []
    for name in check_names():
        severity = Severity(getattr(cfg.checks, name))
        if severity is Severity.off:
            continue
        for e in BUILDERS[name](cfg, data):
            specs.append(ExpectationSpec(name, severity, *e))
    return specs


def check_names() -> list[str]:
    return [f.name for f in fields(ValidateChecks)]


def expected_splits(cfg: ValidateConfig) -> list[str]:
    return list(cfg.rows)


def describe_int_set(values: list[int]) -> str:
    """{0..9} for a contiguous run, else {1, 4, 7}."""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ", ".join(str(v) for v in values) + "}"


def percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def mostly(max_fraction: float) -> float:
    """GX's `mostly` (the share of rows that must pass) for at most `max_fraction` failing."""
    return round(1.0 - max_fraction, 12)


def _schema(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    columns = list(TABLE_COLUMNS)
    return [
        Expect(
            "ExpectTableColumnsToMatchSet",
            {"column_set": columns, "exact_match": True},
            f"columns are exactly {{{', '.join(columns)}}}",
        )
    ]


def _types(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToBeOfType", {"column": c, "type_": t}, f"{c} is {t}")
        for c, t in TABLE_DTYPES.items()
    ]


def _not_null(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToNotBeNull", {"column": c}, f"{c} not null", rejected="null")
        for c in TABLE_COLUMNS
    ]


def _unique_ids(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToBeUnique", {"column": "id"}, "id unique", rejected="duplicated")
    ]


def _rows(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    splits = expected_splits(cfg)
    out = [
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "split", "value_set": splits},
            f"split in {{{', '.join(splits)}}}",
        )
    ]
    for split, (low, high) in cfg.rows.items():
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        out.append(
            Expect(
                "ExpectTableRowCountToBeBetween",
                {"min_value": low, "max_value": high},
                f"{split} rows {bound}",
                where={"split": split},
            )
        )
    return out


def _label_set(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    labels = list(range(len(data.class_names)))
    return [
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "label", "value_set": labels},
            f"label in {describe_int_set(labels)}",
        )
    ]


def _class_coverage(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    splits = ", ".join(expected_splits(cfg))
    n = cfg.min_class_count
    return [
        Expect(
            "ExpectColumnValuesToBeBetween",
            {"column": "count", "min_value": n},
            f"every class has >= {n} image{'s' if n != 1 else ''} in each split ({splits})",
            table=CLASSES,
        )
    ]


def _class_balance(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    ratio = cfg.max_class_ratio
    return [
        Expect(
            "ExpectColumnValuesToBeBetween",
            {"column": "imbalance", "max_value": ratio},
            f"no class of a split more than {ratio:g}x smaller than its largest",
            table=CLASSES,
        )
    ]


def _shape(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    wanted = {"channels": data.channels, "height": data.image_size, "width": data.image_size}
    return [
        Expect("ExpectColumnValuesToBeInSet", {"column": c, "value_set": [v]}, f"{c} == {v}")
        for c, v in wanted.items()
    ]


def _pixel_range(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect(
            "ExpectColumnValuesToBeBetween",
            {"column": "pixel_min", "min_value": cfg.pixel_min},
            f"pixel_min >= {cfg.pixel_min}",
        ),
        Expect(
            "ExpectColumnValuesToBeBetween",
            {"column": "pixel_max", "max_value": cfg.pixel_max},
            f"pixel_max <= {cfg.pixel_max}",
        ),
    ]


def _blank(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    limit = percent(cfg.max_blank_fraction)
    return [
        Expect(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "pixel_max",
                "column_B": "pixel_min",
                "or_equal": False,
                "mostly": mostly(cfg.max_blank_fraction),
            },
            f"{split}: at most {limit} blank images (pixel_min == pixel_max)",
            where={"split": split},
            rejected="blank",
        )
        for split in expected_splits(cfg)
    ]


def _duplicates(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    limit = percent(cfg.max_duplicate_fraction)
    return [
        Expect(
            "ExpectColumnValuesToBeUnique",
            {"column": "sha1", "mostly": mostly(cfg.max_duplicate_fraction)},
            f"{split}: at most {limit} of images with an identical copy (same sha1)",
            where={"split": split},
            rejected="duplicated",
        )
        for split in expected_splits(cfg)
    ]


def _leakage(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect(
            "ExpectColumnSumToBeBetween",
            {"column": "leaked", "min_value": 0, "max_value": cfg.max_leakage},
            f"at most {cfg.max_leakage} images outside {TRAIN} identical to a {TRAIN} image",
            flag="leaked",
        )
    ]


# check name (a ValidateChecks field) -> its builder
BUILDERS: dict[str, Builder] = {
    "schema": _schema,
    "types": _types,
    "not_null": _not_null,
    "unique_ids": _unique_ids,
    "rows": _rows,
    "label_set": _label_set,
    "class_coverage": _class_coverage,
    "class_balance": _class_balance,
    "shape": _shape,
    "pixel_range": _pixel_range,
    "blank": _blank,
    "duplicates": _duplicates,
    "leakage": _leakage,
}
