"""Stage `manifest`: a digest of the files under data.path, which the ingest stage depends on.

DVC runs it on every `dvc repro` (`always_changed`: it cannot see a folder outside the
repository change); the bytes it writes change only when a file under data.path is
added, removed, resized or touched, so only then does ingest rerun (see
mlpipe.ingest.manifest).
"""

from __future__ import annotations

import argparse
import logging
import sys

from mlpipe.config import load_sections
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.manifest import folder_manifest
from mlpipe.io import atomic_write_json
from mlpipe.runner import run_stage

log = logging.getLogger("mlpipe.manifest")
SECTIONS = {"data": DataConfig}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="manifest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="manifest.json to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: DataConfig = load_sections(args.params, SECTIONS)["data"]
        manifest = folder_manifest(cfg)
        atomic_write_json(args.out, manifest)
        if "files" in manifest:
            log.info("%s: %d files, %d bytes", cfg.path, manifest["files"], manifest["bytes"])

    return run_stage("manifest", body)


if __name__ == "__main__":
    sys.exit(main())
