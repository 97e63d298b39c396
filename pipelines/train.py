"""Stage `train`: fit the configured model; open (or, resuming, reopen) the MLflow run.

A killed run resumes from `<model-dir>/resume.pt` (see mlpipe.training.resume). Under
`torchrun --nproc_per_node=N -m pipelines.train ...` every rank trains its share of each
batch; rank 0 alone imports MLflow and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlpipe.cli import run_stage
from mlpipe.config import load_sections
from mlpipe.data.dataset import ImageDataset, load_dataset
from mlpipe.errors import TrackingError
from mlpipe.io import atomic_write_json, atomic_write_text
from mlpipe.models import build_model
from mlpipe.training import distributed
from mlpipe.training.checkpoint import model_meta, save_checkpoint
from mlpipe.training.device import Runtime, runtime_for, seed_everything
from mlpipe.training.engine import EpochStats, TensorData, fit
from mlpipe.training.resume import RESUME_FILE, ResumeFile

log = logging.getLogger("mlpipe.train")
SECTIONS = ["model", "train", "tracking"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="train.json: run id, history")
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV (DVC plot)")
    parser.add_argument("--resume-file", type=Path, help=f"default: <model-dir>/{RESUME_FILE}")
    parser.add_argument("--validation", type=Path, help="validate's report, logged to the run")
    parser.add_argument("--data-docs", type=Path, help="validate's GX Data Docs, logged too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, SECTIONS)
        data = load_dataset(args.data)
        runtime = runtime_for(cfg["train"])
        try:
            train_stage(args, cfg, data, runtime)
        finally:
            distributed.shutdown()

    return run_stage("train", body)


def train_stage(
    args: argparse.Namespace, cfg: dict[str, Any], data: ImageDataset, runtime: Runtime
) -> None:
    seed_everything(cfg["train"].seed)
    norm = data.extra["normalization"]
    model = build_model(
        cfg["model"], data.image_shape[0], len(data.class_names), norm["mean"], norm["std"]
    )
    train, val = (
        TensorData.from_numpy(data.splits[s].images, data.splits[s].labels)
        for s in ("train", "val")
    )
    path = args.resume_file or args.model_dir / RESUME_FILE
    resume = ResumeFile.for_run(
        path, cfg["model"], cfg["train"], {"train": train, "val": val}, runtime.dist
    )
    state = resume.load() or {}  # a bad checkpoint fails here, before MLflow is touched
    if not runtime.dist.is_main:
        logging.getLogger("mlpipe").setLevel(logging.WARNING)  # rank 0 reports progress
        fit(model, train, val, cfg["train"], runtime, checkpointer=resume)
        return
    from mlpipe import tracking  # only here: only rank 0 ever imports mlflow

    with open_run(tracking, cfg, resume.extra.get("mlflow_run_id")) as (run_id, reopened):
        resume.extra["mlflow_run_id"] = run_id
        if not reopened:
            tracking.log_params(
                {k: dataclasses.asdict(cfg[k]) for k in ("model", "train")}
                | {"data": {"source": data.source, **data.meta()["splits"]}}
            )
            log_validation(tracking, args.validation, args.data_docs)
            for row in state.get("history", []):  # epochs trained before a kill
                log_epoch(row)
        history = fit(model, train, val, cfg["train"], runtime, log_epoch, checkpointer=resume)
        meta = model_meta(data.class_names, data.image_shape, norm)
        save_checkpoint(args.model_dir / "model.pt", model, cfg["model"], meta)
        uri = tracking.log_classifier(model, data.class_names, data.splits["train"].images[:4])
    atomic_write_text(args.curves, history.to_csv())
    report = {"run_id": run_id, "model_uri": uri, "experiment": cfg["tracking"].experiment}
    atomic_write_json(args.report, report | history.summary())
    resume.mark_complete(report)  # a later run starts from scratch
    log.info("run %s: val accuracy %.4f", run_id, history.epochs[-1].val_accuracy)


def log_validation(tracking: Any, report: Path | None, docs: Path | None) -> None:
    """The data gate's results belong to the run of the pipeline execution that used the data."""
    if report is not None and report.is_file():
        summary = json.loads(report.read_text())
        counts = ("evaluated", "passed", "failed", "warnings")
        tracking.log_metrics({f"validation_{k}": summary[k] for k in counts if k in summary})
        tracking.set_tags({"validation_success": str(summary.get("success"))})
        tracking.log_artifact(report, "validation")
    if docs is not None and docs.is_dir():
        tracking.log_artifacts(docs, "validation/data_docs")


def log_epoch(stats: EpochStats | dict[str, Any]) -> None:
    from mlpipe import tracking

    row = stats if isinstance(stats, dict) else dataclasses.asdict(stats)
    tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


@contextlib.contextmanager
def open_run(
    tracking: Any, cfg: dict[str, Any], previous: str | None
) -> Iterator[tuple[str, bool]]:
    """Reopen the killed run's MLflow run when resuming; else (or if it is gone) a new one."""
    with contextlib.ExitStack() as stack:
        run_id = None
        if previous:
            try:
                run_id = stack.enter_context(tracking.resume_run(previous))
            except TrackingError as exc:
                log.warning("%s; logging to a new MLflow run", exc)
        if run_id is None:
            tags = tracking.run_tags("train")
            suffix = tags.get("dvc_exp_name", tags.get("git_commit", "local")[:8])
            run_id = stack.enter_context(
                tracking.start_run(
                    cfg["tracking"].experiment, f"{cfg['model'].arch}-{suffix}", tags
                )
            )
            yield run_id, False
        else:
            yield run_id, True


if __name__ == "__main__":
    sys.exit(main())
