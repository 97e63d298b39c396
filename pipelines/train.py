"""Stage `train`: fit the configured model; open this pipeline execution's MLflow run."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import sys
from pathlib import Path

import torch

from mlpipe import tracking
from mlpipe.cli import run_stage
from mlpipe.config import load_sections
from mlpipe.data.dataset import ImageSplit, load_dataset
from mlpipe.io import atomic_write_json, atomic_write_text
from mlpipe.models import build_model
from mlpipe.training.checkpoint import save_checkpoint
from mlpipe.training.device import resolve_runtime, seed_everything
from mlpipe.training.engine import EpochStats, History, TensorData, fit

log = logging.getLogger("mlpipe.train")
SECTIONS = ["model", "train", "tracking"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="train.json: run id, history")
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV (DVC plot)")
    return parser.parse_args(argv)


def tensors(split: ImageSplit) -> TensorData:
    return TensorData(torch.from_numpy(split.images), torch.from_numpy(split.labels))


def curves_csv(history: History) -> str:
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(EpochStats)]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history.rows())
    return buf.getvalue()


def log_epoch(stats: EpochStats) -> None:
    tracking.log_metrics(
        {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}, step=stats.epoch
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, SECTIONS)
        data = load_dataset(args.data)
        norm = data.extra["normalization"]
        runtime = resolve_runtime(
            cfg["train"].device, cfg["train"].precision, cfg["train"].num_threads
        )
        seed_everything(cfg["train"].seed)
        in_channels = data.image_shape[0]
        model = build_model(
            cfg["model"], in_channels, len(data.class_names), norm["mean"], norm["std"]
        )
        tags = tracking.run_tags("train")
        run_name = (
            f"{cfg['model'].arch}-{tags.get('dvc_exp_name', tags.get('git_commit', 'local')[:8])}"
        )
        with tracking.start_run(cfg["tracking"].experiment, run_name, tags) as run_id:
            tracking.log_params(
                {k: dataclasses.asdict(cfg[k]) for k in ("model", "train")}
                | {"data": {"source": data.source, **data.meta()["splits"]}}
            )
            history = fit(
                model,
                tensors(data.splits["train"]),
                tensors(data.splits["val"]),
                cfg["train"],
                runtime,
                on_epoch_end=log_epoch,
            )
            meta = {
                "class_names": data.class_names,
                "in_channels": in_channels,
                "image_shape": list(data.image_shape),
                "normalization": norm,
            }
            save_checkpoint(args.model_dir / "model.pt", model, cfg["model"], meta)
            model_uri = log_model(model.cpu().eval(), data.splits["val"], data.class_names)
        atomic_write_text(args.curves, curves_csv(history))
        last = history.epochs[-1]
        atomic_write_json(
            args.report,
            {
                "run_id": run_id,
                "model_uri": model_uri,
                "experiment": cfg["tracking"].experiment,
                "device": history.device,
                "precision": history.precision,
                "train_seconds": round(history.train_seconds, 2),
                "images_per_second": round(last.images_per_second, 1),
                "val_accuracy": round(last.val_accuracy, 4),
                "epochs": len(history.epochs),
            },
        )
        log.info(
            "run %s: val accuracy %.4f after %d epochs",
            run_id,
            last.val_accuracy,
            len(history.epochs),
        )

    return run_stage("train", body)


def log_model(model: torch.nn.Module, sample: ImageSplit, class_names: list[str]) -> str:
    example = sample.images[:4].astype("float32")  # raw pixels, batch >= 2 for pt2 export
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    return tracking.log_torch_model(model, example, output, {"class_names": class_names})


if __name__ == "__main__":
    sys.exit(main())
