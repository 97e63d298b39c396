"""Stage `preprocess`: stratified train/val split, train-only normalisation statistics."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlpipe.cli import run_stage
from mlpipe.config import load_sections
from mlpipe.data.dataset import load_dataset, save_dataset
from mlpipe.data.split import make_processed
from mlpipe.errors import DataError
from mlpipe.io import read_json

log = logging.getLogger("mlpipe.preprocess")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, required=True, help="ingested dataset folder")
    parser.add_argument("--validation", type=Path, required=True, help="validate's report")
    parser.add_argument("--out", type=Path, required=True, help="processed dataset folder")
    return parser.parse_args(argv)


def require_passed(report: Path) -> None:
    """Refuse data the gate did not pass, also when run outside `dvc repro`."""
    if read_json(report).get("success") is not True:
        raise DataError(f"{report}: validation did not pass; fix the data and rerun validate")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        data = load_sections(args.params, ["data"])["data"]
        require_passed(args.validation)
        processed = make_processed(load_dataset(args.raw), data.val_fraction, data.split_seed)
        save_dataset(processed, args.out)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in processed.splits.items())
        log.info(
            "wrote %s: %s; mean %s std %s",
            args.out,
            sizes,
            processed.extra["normalization"]["mean"],
            processed.extra["normalization"]["std"],
        )

    return run_stage("preprocess", body)


if __name__ == "__main__":
    sys.exit(main())
