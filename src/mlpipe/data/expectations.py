"""The validation suite as plain data: which expectations, on which columns, how severe.

Pure: no Great Expectations import. `validation.py` turns each `ExpectationSpec`
into a GX expectation by its class name (`kind`) and keyword arguments.

Adding a check: add a field to `ValidateChecks` (config.py) and a builder to
`BUILDERS` here, under the same name. A builder takes the validate and data
settings and returns the expectations of its check, each with a human
description of what is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Protocol

from mlpipe.config import Severity, ValidateChecks, ValidateConfig
from mlpipe.data.table import TABLE_COLUMNS


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


class Expect(NamedTuple):
    kind: str
    kwargs: dict[str, Any]
    description: str


Builder = Callable[[ValidateConfig, DataFacts], list[Expect]]


def build_specs(cfg: ValidateConfig, data: DataFacts) -> list[ExpectationSpec]:
    """Every enabled check's expectations, in `ValidateChecks` field order."""
    specs = []
    for name in check_names():
        severity = Severity(getattr(cfg.checks, name))
        if severity is Severity.off:
            continue
        for kind, kwargs, description in BUILDERS[name](cfg, data):
            specs.append(ExpectationSpec(name, severity, kind, kwargs, description))
    return specs


def check_names() -> list[str]:
    return [f.name for f in fields(ValidateChecks)]


def describe_int_set(values: list[int]) -> str:
    """{0..9} for a contiguous run, else {1, 4, 7}."""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ", ".join(str(v) for v in values) + "}"


def _schema(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    columns = list(TABLE_COLUMNS)
    return [
        Expect(
            "ExpectTableColumnsToMatchSet",
            {"column_set": columns, "exact_match": True},
            f"columns are exactly {{{', '.join(columns)}}}",
        )
    ]


def _not_null(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    return [
        Expect("ExpectColumnValuesToNotBeNull", {"column": c}, f"{c} not null")
        for c in TABLE_COLUMNS
    ]


def _label_set(cfg: ValidateConfig, data: DataFacts) -> list[Expect]:
    labels = list(range(len(data.class_names)))
    return [
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "label", "value_set": labels},
            f"label in {describe_int_set(labels)}",
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


# check name (a ValidateChecks field) -> its builder
BUILDERS: dict[str, Builder] = {
    "schema": _schema,
    "not_null": _not_null,
    "label_set": _label_set,
    "shape": _shape,
    "pixel_range": _pixel_range,
}
