"""Stage `validate`: check the raw dataset against the expectation suite.

Writes the report (also when the data fails, so it can be inspected), logs
failed `warn` checks, and exits 1 if any `error` check failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mlpipe.cli import run_stage
from mlpipe.config import Severity, load_sections
from mlpipe.data.dataset import load_dataset
from mlpipe.data.expectations import build_specs
from mlpipe.data.table import image_table
from mlpipe.errors import ValidationFailed
from mlpipe.io import atomic_write_json
from mlpipe.validation import run_suite

log = logging.getLogger("mlpipe.validate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="validate", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (data, validate)")
    parser.add_argument("--raw", required=True, help="dataset folder written by ingest")
    parser.add_argument("--report", required=True, help="JSON report to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, ["data", "validate"])
        dataset = load_dataset(args.raw)
        start = time.perf_counter()
        table = image_table(dataset)
        specs = build_specs(cfg["validate"], cfg["data"])
        log.info("table: %d rows in %.2f s", len(table), time.perf_counter() - start)

        start = time.perf_counter()
        report = run_suite(table, specs)
        log.info("suite: %d expectations in %.2f s", len(specs), time.perf_counter() - start)
        atomic_write_json(args.report, report.to_dict())
        for line in report.failure_lines(Severity.warn):
            log.warning("check failed (warn): %s", line)
        if not report.success:
            lines = report.failure_lines(Severity.error)
            raise ValidationFailed(
                f"{len(lines)} expectation(s) failed:\n" + "\n".join(f"  {x}" for x in lines)
            )
        log.info("passed %d of %d expectations -> %s", report.passed, len(specs), args.report)

    return run_stage("validate", body)


if __name__ == "__main__":
    sys.exit(main())
