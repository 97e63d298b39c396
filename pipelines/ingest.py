"""Stage `ingest`: load the images that params.yaml `data` names into --out.

Sources: Fashion-MNIST IDX files, scikit-learn's digits, or your own image
folder (`data=imagefolder data.path=...`, decoded by `data.workers` processes and
written shard by shard). Writes each split as uint8 shards and an index,
plus `meta.json` (see mlpipe.dataset), atomically: a failure leaves an
existing --out as it was. --report gets a summary (counts, shape, source).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mlpipe.config import load_sections
from mlpipe.dataset import save_index
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.sources import summary, write_source
from mlpipe.io import atomic_dir, atomic_write_json
from mlpipe.runner import run_stage

log = logging.getLogger("mlpipe.ingest")
SECTIONS = {"data": DataConfig}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="dataset folder to write (e.g. data/raw)")
    parser.add_argument("--report", help="ingest.json to write (optional)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        started = time.perf_counter()
        cfg: DataConfig = load_sections(args.params, SECTIONS)["data"]
        with atomic_dir(args.out) as tmp:
            dataset = write_source(cfg, tmp)
            save_index(dataset, tmp)
        report = summary(dataset)
        if args.report:
            atomic_write_json(args.report, report)
        skipped = report["skipped"]
        log.info(
            "wrote %s: %s images of %s, %d classes, from %s in %.1f s%s",
            args.out,
            ", ".join(f"{name} {n}" for name, n in report["splits"].items()),
            "x".join(map(str, report["image_shape"])),
            len(report["class_names"]),
            report["source"],
            time.perf_counter() - started,
            f" ({skipped} unreadable file(s) skipped, listed in meta.json)" if skipped else "",
        )

    return run_stage("ingest", body)


if __name__ == "__main__":
    sys.exit(main())
