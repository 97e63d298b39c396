"""The `validate` section of params.yaml: one severity per check, and the bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from mlpipe.config import check


class Severity(str, Enum):
    error = "error"
    warn = "warn"
    off = "off"


@dataclass
class ValidateChecks:
    """One severity per check; the order here is the order of the report."""

    schema: Severity = Severity.error  # the table's columns
    types: Severity = Severity.error  # their dtypes
    not_null: Severity = Severity.error
    unique_ids: Severity = Severity.error
    rows: Severity = Severity.error  # split names, rows per split within `rows`
    label_set: Severity = Severity.error
    class_coverage: Severity = Severity.error  # every class in every split
    class_balance: Severity = Severity.error
    shape: Severity = Severity.error
    pixel_range: Severity = Severity.error
    blank: Severity = Severity.error  # constant images
    duplicates: Severity = Severity.error  # identical images within a split
    leakage: Severity = Severity.error  # test images identical to a train image


@dataclass
class ValidateConfig:
    checks: ValidateChecks = field(default_factory=ValidateChecks)
    pixel_min: int = 0
    pixel_max: int = 255
    # split -> [min, max] rows (max null: no bound); the keys are the splits expected
    rows: dict[str, list[int | None]] = field(
        default_factory=lambda: {"train": [1, None], "test": [1, None]}
    )
    min_class_count: int = 1  # images of each class in each split
    max_class_ratio: float = 10.0  # largest / smallest class within a split
    max_blank_fraction: float = 0.01  # of each split; blank: pixel_min == pixel_max
    max_duplicate_fraction: float = 0.01  # of each split's rows sharing their image
    max_leakage: int = 0  # test images identical to a train image

    def __post_init__(self) -> None:
        check(
            0 <= self.pixel_min < self.pixel_max <= 255,
            "pixel_min/pixel_max",
            f"need 0 <= pixel_min < pixel_max <= 255, got {self.pixel_min}, {self.pixel_max}",
        )
        check(bool(self.rows), "rows", "needs at least one split")
        for split, bounds in self.rows.items():
            low, high = (bounds[0], bounds[1]) if len(bounds) == 2 else (None, None)
            check(
                low is not None and low >= 0 and (high is None or high >= low),
                f"rows.{split}",
                f"must be [min, max] with 0 <= min <= max (max null: no bound), got {bounds}",
            )
        check(
            self.min_class_count >= 0,
            "min_class_count",
            f"must be >= 0, got {self.min_class_count}",
        )
        check(
            math.isfinite(self.max_class_ratio) and self.max_class_ratio >= 1,
            "max_class_ratio",
            f"must be finite and >= 1, got {self.max_class_ratio}",
        )
        for key in ("max_blank_fraction", "max_duplicate_fraction"):
            value = getattr(self, key)
            check(0.0 <= value <= 1.0, key, f"must be in [0, 1], got {value}")
        check(self.max_leakage >= 0, "max_leakage", f"must be >= 0, got {self.max_leakage}")
