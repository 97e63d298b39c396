"""Run an expectation suite with Great Expectations; the ONLY module importing it.

GX 1.x is imported lazily (it takes seconds) and used through an ephemeral
context, so nothing is written under gx/. Each named table gets its own data
asset, suite and validation definition. What comes back is a plain
`ValidationReport`, free of GX types, timestamps and run ids: the same data
gives the same report, byte for byte. On request GX also renders its Data Docs
(HTML, with the run's timestamp) into a folder that is replaced whole.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.io import atomic_dir
from mlpipe.validate.config import Severity
from mlpipe.validate.expectations import CLASSES, IMAGES, ExpectationSpec

log = logging.getLogger(__name__)

ID_COLUMN = "id"
PARTIAL_COUNT = 20  # unexpected rows GX returns per expectation
SHOWN_IDS = 3  # of those, how many ids a failure line names
SHOWN_VALUES = 5  # and how many distinct values
DOCS_SITE = "mlpipe"

# what a failure line calls the rows of each table
_UNITS = {IMAGES: "rows", CLASSES: "split/class pairs"}


@dataclass
class ExpectationResult:
    check: str
    severity: Severity
    kind: str
    description: str
    success: bool
    rejected: str = "outside"  # what the failure line calls rejected rows
    unit: str = "rows"  # and rows in general
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
            if self.example_ids:
                text += ", e.g. ids " + ", ".join(self.example_ids)
            return text
        rejected = self.rejected
        text = f"{self.unexpected_count} of {self.element_count} {self.unit} {rejected}"
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


def run_suite(
    tables: Mapping[str, pd.DataFrame] | pd.DataFrame,
    specs: list[ExpectationSpec],
    docs_dir: str | Path | None = None,
) -> ValidationReport:
    """Validate the named `tables` against `specs`; results come back in `specs` order.

    A lone DataFrame is the `images` table. With `docs_dir`, GX Data Docs (HTML)
    of this run replace that folder whole.
    """
    if isinstance(tables, pd.DataFrame):
        tables = {IMAGES: tables}
    # GX reports rows by index label: make it positional
    tables = {name: t.reset_index(drop=True) for name, t in tables.items()}
    raw = _run_gx(tables, specs, docs_dir)
    return ValidationReport(
        [_to_result(spec, raw.get(i), tables.get(spec.table)) for i, spec in enumerate(specs)]
    )


def _run_gx(
    tables: Mapping[str, pd.DataFrame], specs: list[ExpectationSpec], docs_dir: str | Path | None
) -> dict[int, Any]:
    """GX results keyed by spec index (GX does not keep the suite's order)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before import: noisy
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _quiet_gx_loggers()
        imported = time.perf_counter()
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = ctx.data_sources.add_pandas("mlpipe")
        run_id = RunIdentifier(run_name="mlpipe-validate")  # one run: one docs entry per table
        by_spec: dict[int, Any] = {}
        for name in dict.fromkeys(spec.table for spec in specs):
            if name in tables:  # else its specs get "no table"
                result = _validate_table(gx, ctx, source, name, tables[name], specs, run_id)
                by_spec.update(_by_spec(result))
        validated = time.perf_counter()
        if docs_dir is not None:
            _build_docs(ctx, Path(docs_dir))
    log.info(
        "GX: import %.2f s, validation %.2f s, data docs %.2f s",
        imported - started,
        validated - imported,
        time.perf_counter() - validated,
    )
    return by_spec


def _validate_table(
    gx: Any,
    ctx: Any,
    source: Any,
    name: str,
    table: pd.DataFrame,
    specs: list[ExpectationSpec],
    run_id: Any,
) -> Any:
    """Run the specs of table `name` as one suite over one dataframe asset."""
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=name))
    for i, spec in enumerate(specs):
        if spec.table == name:
            suite.add_expectation(_expectation(gx, spec, i))
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    return definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_COUNT},
        run_id=run_id,
    )


def _expectation(gx: Any, spec: ExpectationSpec, index: int) -> Any:
    kwargs = dict(spec.kwargs)
    if spec.where:
        from great_expectations.expectations.row_conditions import Column

        (column, value), *more = spec.where.items()
        if more:
            raise ValueError(f"{spec.description}: `where` takes one column, got {spec.where}")
        kwargs["row_condition"] = Column(column) == value
    return getattr(gx.expectations, spec.kind)(**kwargs, meta={"spec": index})


def _by_spec(result: Any) -> dict[int, Any]:
    out = {}
    for r in result.results:
        config = r.expectation_config
        if config is not None and config.meta and "spec" in config.meta:
            out[int(config.meta["spec"])] = r
    return out


def _build_docs(ctx: Any, docs_dir: Path) -> None:
    """Render this context's suites and results as a static site that replaces `docs_dir`."""
    for site in list(ctx.list_data_docs_sites()):
        ctx.delete_data_docs_site(site)  # the ephemeral default points at a temp folder
    with atomic_dir(docs_dir) as tmp:
        ctx.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(tmp.resolve()),  # GX wants it absolute
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        ctx.build_data_docs(site_names=[DOCS_SITE])


def _quiet_gx_loggers() -> None:
    """Some GX modules set their own logger to INFO (e.g. the ephemeral docs-site note)."""
    for name in list(logging.root.manager.loggerDict):
        if name == "great_expectations" or name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.WARNING)


def _to_result(spec: ExpectationSpec, raw: Any, table: pd.DataFrame | None) -> ExpectationResult:
    out = ExpectationResult(
        check=spec.check,
        severity=spec.severity,
        kind=spec.kind,
        description=spec.description,
        success=False,
        rejected=spec.rejected,
        unit=_UNITS.get(spec.table, "rows"),
        column=spec.kwargs.get("column"),
    )
    if raw is None:
        out.error = "no result" if table is not None else f"no table {spec.table!r}"
        return out
    out.success = bool(raw.success)
    out.error = _exception_message(raw.exception_info)
    ids = table[ID_COLUMN] if table is not None and ID_COLUMN in table.columns else None
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
        if not out.success and spec.flag and table is not None and spec.flag in table:
            flagged = table[spec.flag].fillna(False).astype(bool)
            if ids is not None:
                out.example_ids = [str(i) for i in ids[flagged].head(SHOWN_IDS)]
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
