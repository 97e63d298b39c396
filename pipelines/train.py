"""Stage `train`: fit the configured model; open (or, resuming, reopen) the MLflow run.

A killed run resumes from `<model-dir>/resume.pt` (see mlpipe.train.resume). Under
`torchrun --nproc_per_node=N -m pipelines.train ...` every rank trains its share of each
batch; rank 0 alone imports MLflow and writes files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlpipe.config import Schema, load_sections
from mlpipe.dataset import open_dataset
from mlpipe.errors import TrackingError
from mlpipe.io import atomic_write_json, atomic_write_text
from mlpipe.models import schema_for
from mlpipe.models.checkpoint import model_meta, save_checkpoint
from mlpipe.runner import run_stage
from mlpipe.tracking.config import TrackingConfig
from mlpipe.train import distributed
from mlpipe.train.config import RuntimeConfig, TrainConfig
from mlpipe.train.device import runtime_for
from mlpipe.train.resume import RESUME_FILE
from mlpipe.train.stage import train

log = logging.getLogger("mlpipe.train")
SECTIONS: dict[str, Schema] = {
    "model": schema_for,
    "train": TrainConfig,
    "runtime": RuntimeConfig,
    "tracking": TrackingConfig,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train", description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="train.json: run id, history")
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV (DVC plot)")
    parser.add_argument("--resume-file", type=Path, help=f"default: <model-dir>/{RESUME_FILE}")
    parser.add_argument("--validation", type=Path, help="validate's report, logged to the run")
    parser.add_argument(
        "--data-docs", type=Path, help="validate.html (or a Data Docs folder), logged too"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, SECTIONS)
        data = open_dataset(args.data)  # pixels stay on disk until train decides
        runtime = runtime_for(cfg["runtime"])
        resume_path = args.resume_file or args.model_dir / RESUME_FILE
        try:
            done, resume = train(
                cfg, data, runtime, resume_path, args.validation, args.data_docs, args.data
            )
        finally:
            distributed.shutdown()
        if not runtime.dist.is_main:
            return
        meta = model_meta(data.class_names, data.image_shape, data.extra["normalization"])
        meta["temperature"] = done.temperature  # evaluate reports ECE with and without it
        save_checkpoint(args.model_dir / "model.pt", done.model, cfg["model"], meta)
        if done.tracking_lost is not None:  # keep the model and the resume file
            raise TrackingError(
                f"{done.tracking_lost}: the trained model is kept in {args.model_dir}/model.pt "
                f"and {resume_path}; rerun the stage once the store is back to log it "
                "without retraining"
            )
        atomic_write_text(args.curves, done.history.to_csv())
        report = {
            "run_id": done.run_id,
            "model_uri": done.model_uri,
            "temperature": round(done.temperature, 4),
        }
        atomic_write_json(args.report, report | done.history.summary())
        resume.mark_complete()  # a later run starts from scratch
        log.info("run %s: val accuracy %.4f", done.run_id, done.history.epochs[-1].val_accuracy)

    return run_stage("train", body)


if __name__ == "__main__":
    sys.exit(main())
