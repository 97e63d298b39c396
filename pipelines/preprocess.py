"""Stage `preprocess`: stratified train/val split, train-only normalisation statistics.

--out holds meta.json and the split indexes only: their shards are raw's (paths relative to
--out, e.g. ../raw/train-00000.npy), so no pixel is copied; a later stage reading --out
needs --raw beside it, as written (its shards' SHA-256 in meta.json are checked on read).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlpipe.config import load_sections
from mlpipe.dataset import open_dataset, save_index
from mlpipe.errors import DataError
from mlpipe.io import atomic_dir, atomic_write_json, read_json
from mlpipe.preprocess.config import PreprocessConfig
from mlpipe.preprocess.split import index_processed, summary
from mlpipe.runner import run_stage

log = logging.getLogger("mlpipe.preprocess")
SECTIONS = {"preprocess": PreprocessConfig}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="preprocess", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, required=True, help="ingested dataset folder")
    parser.add_argument("--validation", type=Path, required=True, help="validate's report")
    parser.add_argument("--out", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--report", type=Path, help="preprocess.json to write (optional)")
    return parser.parse_args(argv)


def require_passed(report: Path) -> None:
    """Refuse data the gate did not pass, also when run outside `dvc repro`."""
    if read_json(report).get("success") is not True:
        raise DataError(f"{report}: validation did not pass; fix the data and rerun validate")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: PreprocessConfig = load_sections(args.params, SECTIONS)["preprocess"]
        require_passed(args.validation)
        processed = index_processed(open_dataset(args.raw), cfg.val_fraction, cfg.split_seed)
        with atomic_dir(args.out) as tmp:
            save_index(processed, tmp)
        report = summary(processed)
        if args.report:
            atomic_write_json(args.report, report)
        sizes = ", ".join(f"{k} {n}" for k, n in report["splits"].items())
        norm = report["normalization"]
        log.info("wrote %s: %s; mean %s std %s", args.out, sizes, norm["mean"], norm["std"])

    return run_stage("preprocess", body)


if __name__ == "__main__":
    sys.exit(main())
