"""Stage `validate`: check the raw dataset against the expectation suite.

Writes the report (also when the data fails, so it can be inspected) and, with
--data-docs, GX Data Docs (HTML; not byte-stable, so not a DVC output), and
--summary, validate.html (one self-contained page, what the MLflow run shows); logs
failed `warn` checks, and exits 1 if any `error` check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from mlpipe.config import load_sections
from mlpipe.dataset import ShardedDataset, open_dataset
from mlpipe.errors import ValidationFailed
from mlpipe.ingest.config import DataConfig
from mlpipe.io import atomic_write_json, atomic_write_text
from mlpipe.runner import run_stage
from mlpipe.validate.config import Severity, ValidateConfig
from mlpipe.validate.expectations import CLASSES, IMAGES, build_specs, expected_splits
from mlpipe.validate.gx import run_suite
from mlpipe.validate.summary import render_html
from mlpipe.validate.table import class_table, streamed_table

log = logging.getLogger("mlpipe.validate")
SECTIONS = {"data": DataConfig, "validate": ValidateConfig}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="validate", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (data, validate)")
    parser.add_argument("--raw", required=True, help="dataset folder written by ingest")
    parser.add_argument("--report", required=True, help="JSON report to write")
    parser.add_argument("--data-docs", help="folder to (re)write GX Data Docs into (optional)")
    parser.add_argument(
        "--summary", help="validate.html: the results as one self-contained page (optional)"
    )
    return parser.parse_args(argv)


def data_facts(cfg: DataConfig, dataset: ShardedDataset) -> DataConfig:
    """The data settings, with the class names of the dataset where params leave them empty."""
    if cfg.class_names:
        return cfg
    return dataclasses.replace(cfg, class_names=list(dataset.class_names))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, SECTIONS)
        dataset = open_dataset(args.raw)
        data = data_facts(cfg["data"], dataset)
        start = time.perf_counter()
        images = streamed_table(dataset)  # shard by shard: one block of pixels at a time
        classes = class_table(images, expected_splits(cfg["validate"]), data.class_names)
        specs = build_specs(cfg["validate"], data)
        log.info("table: %d rows in %.2f s", len(images), time.perf_counter() - start)

        start = time.perf_counter()
        report = run_suite({IMAGES: images, CLASSES: classes}, specs, args.data_docs)
        what = f" and data docs in {args.data_docs}" if args.data_docs else ""
        log.info(
            "suite: %d expectations%s in %.2f s", len(specs), what, time.perf_counter() - start
        )
        atomic_write_json(args.report, report.to_dict())
        if args.summary:
            atomic_write_text(Path(args.summary), render_html(report.to_dict()))
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
