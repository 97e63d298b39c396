"""Run an expectation suite with Great Expectations; the ONLY module importing it.

GX 1.x is imported lazily (it takes seconds) and used through an ephemeral
context, so nothing is written under gx/. What comes back is a plain
`ValidationReport`, free of GX types, timestamps and run ids: the same data
gives the same report, byte for byte.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.config import Severity
from mlpipe.data.expectations import ExpectationSpec

ID_COLUMN = "id"
PARTIAL_COUNT = 20  # unexpected rows GX returns per expectation
SHOWN_IDS = 3  # of those, how many ids a failure line names
SHOWN_VALUES = 5  # and how many distinct values

# how a failure line calls the rows a column expectation rejects; default "outside"
_REJECTED = {"ExpectColumnValuesToNotBeNull": "null"}


@dataclass
class ExpectationResult:
    check: str
    severity: Severity
    kind: str
    description: str
    success: bool
    column: str | None = None
    observed: Any = None  # table-level expectations: what GX measured
    element_count: int | None = None  # column expectations: rows seen ...
    unexpected_count: int | None = None  # ... and rows rejected
    example_ids: list[str] = field(default_factory=list)
    example_values: list[Any] = field(default_factory=list)
    mismatched: dict[str, Any] | None = None  # schema: {"missing": [...], "unexpected": [...]}
    error: str | None = None  # GX raised instead of deciding

    def failure_line(self) -> str:
        return f"{self.check}: {self.description}: {self._observation()}"

    def _observation(self) -> str:
        if self.error is not None:
            return f"could not be evaluated: {self.error}"
        if self.unexpected_count is None:
            text = f"observed {_show(self.observed)}"
            for key in ("missing", "unexpected"):
                names = (self.mismatched or {}).get(key)
                if names:
                    text += f"; {key}: {', '.join(map(str, names))}"
            return text
        rejected = _REJECTED.get(self.kind, "outside")
        text = f"{self.unexpected_count} of {self.element_count} rows {rejected}"
        if self.example_ids:
            text += ", e.g. ids " + ", ".join(self.example_ids)
        if self.example_values and rejected == "outside":
            text += " (values " + ", ".join(_show(v) for v in self.example_values) + ")"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "severity": self.severity.value,
            "expectation": self.kind,
            "description": self.description,
            "success": self.success,
        }
        optional = {
            "column": self.column,
            "observed": self.observed,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "mismatched": self.mismatched,
            "error": self.error,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if not self.success and self.example_ids:
            out["example_ids"] = self.example_ids
        if not self.success and self.example_values:
            out["example_values"] = self.example_values
        return out


@dataclass
class ValidationReport:
    results: list[ExpectationResult]

    def failed(self, severity: Severity) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity is severity]

    @property
    def evaluated(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(r.success for r in self.results)

    @property
    def failed_errors(self) -> int:
        return len(self.failed(Severity.error))

    @property
    def failed_warnings(self) -> int:
        return len(self.failed(Severity.warn))

    @property
    def success(self) -> bool:
        """True iff no expectation of severity `error` failed."""
        return self.failed_errors == 0

    def failure_lines(self, severity: Severity | None = None) -> list[str]:
        """One line per failed expectation (of `severity`, if given), in suite order."""
        return [
            r.failure_line()
            for r in self.results
            if not r.success and (severity is None or r.severity is severity)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "evaluated": self.evaluated,
            "passed": self.passed,
            "failed": self.failed_errors,
            "warnings": self.failed_warnings,
            "results": [r.to_dict() for r in self.results],
        }


def run_suite(table: pd.DataFrame, specs: list[ExpectationSpec]) -> ValidationReport:
    """Validate `table` against `specs`; results come back in `specs` order."""
    table = table.reset_index(drop=True)  # GX reports rows by index label: make it positional
    raw = _run_gx(table, specs)
    ids = table[ID_COLUMN] if ID_COLUMN in table.columns else None
    return ValidationReport([_to_result(spec, raw.get(i), ids) for i, spec in enumerate(specs)])


def _run_gx(table: pd.DataFrame, specs: list[ExpectationSpec]) -> dict[int, Any]:
    """GX results keyed by spec index (GX does not keep the suite's order)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before import: noisy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _quiet_gx_loggers()
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (
            ctx.data_sources.add_pandas("mlpipe")
            .add_dataframe_asset("images")
            .add_batch_definition_whole_dataframe("all")
        )
        suite = ctx.suites.add(gx.ExpectationSuite(name="mlpipe"))
        for i, spec in enumerate(specs):
            expectation_class = getattr(gx.expectations, spec.kind)
            suite.add_expectation(expectation_class(**spec.kwargs, meta={"spec": i}))
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="mlpipe", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": table},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_COUNT},
        )
    by_spec = {}
    for r in result.results:
        config = r.expectation_config
        if config is not None and config.meta and "spec" in config.meta:
            by_spec[int(config.meta["spec"])] = r
    return by_spec


def _quiet_gx_loggers() -> None:
    """Some GX modules set their own logger to INFO (e.g. the ephemeral docs-site note)."""
    for name in list(logging.root.manager.loggerDict):
        if name == "great_expectations" or name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.WARNING)


def _to_result(spec: ExpectationSpec, raw: Any, ids: pd.Series | None) -> ExpectationResult:
    if raw is None:
        return ExpectationResult(
            spec.check, spec.severity, spec.kind, spec.description, False, error="no result"
        )
    out = ExpectationResult(
        check=spec.check,
        severity=spec.severity,
        kind=spec.kind,
        description=spec.description,
        success=bool(raw.success),
        column=spec.kwargs.get("column"),
        error=_exception_message(raw.exception_info),
    )
    res = raw.result or {}
    if "unexpected_count" in res:
        out.element_count = int(res["element_count"])
        out.unexpected_count = int(res["unexpected_count"])
        # Index labels of the first unexpected rows. Asking GX for
        # `unexpected_index_column_names` instead costs seconds per failing
        # expectation on 70k rows: it builds the full list before truncating.
        rows = (res.get("partial_unexpected_index_list") or [])[:SHOWN_IDS]
        if ids is not None:
            out.example_ids = [str(ids.loc[row]) for row in rows]
        counts = res.get("partial_unexpected_counts") or []  # most frequent first
        values = [_plain(c["value"]) for c in counts if c["value"] is not None]
        out.example_values = values[:SHOWN_VALUES]
    elif "observed_value" in res:
        out.observed = _plain(res["observed_value"])
        mismatched = (res.get("details") or {}).get("mismatched")
        out.mismatched = _plain(mismatched) if mismatched else None
    return out


def _exception_message(info: Any) -> str | None:
    """GX puts one exception dict directly, or several keyed by metric id."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info["exception_message"]) if info["raised_exception"] else None
    messages = [str(v["exception_message"]) for v in info.values() if v.get("raised_exception")]
    return "; ".join(sorted(set(messages))) or None


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays become Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
