"""Stage `params`: check every section of params.yaml before any other stage runs.

DVC removes a stage's outputs just before it runs that stage, so a stage that rejects its
own params has already lost them (and `cache: false` outputs cannot be checked out again).
This stage runs first (ingest depends on its --out) and loads every section with the schema
of the stage that reads it (each stage's `SECTIONS`), so a bad value stops `dvc repro`
before anything is removed. Outside `dvc exp run` (which composes params.yaml itself, with
its -S overrides) it also refuses a params.yaml that is not the composition of conf/: plain
`dvc repro` after an edit in conf/ would otherwise run on stale values. --out lists the
section names only: its bytes do not change with the values, so a rerun with good params
reruns nothing downstream by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mlpipe.compose import check_fresh
from mlpipe.config import Schema, load_sections
from mlpipe.io import atomic_write_json
from mlpipe.runner import run_stage
from pipelines import evaluate, ingest, manifest, preprocess, register, train, validate

log = logging.getLogger("mlpipe.params")
STAGE_MODULES = [manifest, ingest, validate, preprocess, train, evaluate, register]  # in DAG order
SECTIONS: dict[str, Schema] = {
    name: schema for module in STAGE_MODULES for name, schema in module.SECTIONS.items()
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="params", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="params.json: sections checked")
    parser.add_argument("--conf", type=Path, default=Path("conf"), help="Hydra config root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        load_sections(args.params, SECTIONS)
        if not os.environ.get("DVC_EXP_NAME"):  # set by DVC for every `dvc exp run`
            check_fresh(args.conf.resolve().parent, args.params)
        atomic_write_json(args.out, {"checked_sections": sorted(SECTIONS)})
        log.info("%s: %d sections valid (%s)", args.params, len(SECTIONS), ", ".join(SECTIONS))

    return run_stage("params", body)


if __name__ == "__main__":
    sys.exit(main())
