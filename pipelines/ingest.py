"""Stage `ingest`: load the images that params.yaml `data` names into --out.

Sources: Fashion-MNIST IDX files, scikit-learn's digits, or your own image
folder (`data=imagefolder data.path=...`). Writes one `<split>.npz` per split
plus `meta.json` (see mlpipe.data.dataset), atomically: a failure leaves an
existing --out as it was.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mlpipe.cli import run_stage
from mlpipe.config import DataConfig, load_sections
from mlpipe.data.dataset import ImageDataset, save_dataset
from mlpipe.data.sources import load_source

# not __name__: under `python -m pipelines.ingest` that is "__main__"
log = logging.getLogger("pipelines.ingest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="dataset folder to write (e.g. data/raw)")
    return parser.parse_args(argv)


def summarize(dataset: ImageDataset, out: str, seconds: float) -> str:
    splits = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    shape = "x".join(map(str, dataset.image_shape))
    skipped = len(dataset.extra.get("skipped", []))
    return (
        f"wrote {out}: {splits} images of {shape}, {len(dataset.class_names)} classes, "
        f"from {dataset.source} in {seconds:.1f} s"
        + (f" ({skipped} unreadable file(s) skipped, listed in meta.json)" if skipped else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        started = time.perf_counter()
        cfg: DataConfig = load_sections(args.params, ["data"])["data"]
        dataset = load_source(cfg)
        save_dataset(dataset, args.out)
        log.info(summarize(dataset, args.out, time.perf_counter() - started))

    return run_stage("ingest", body)


if __name__ == "__main__":
    sys.exit(main())
