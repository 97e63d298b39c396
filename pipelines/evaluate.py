"""Stage `evaluate`: metrics on the held-out test set, logged to the pipeline's MLflow run."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

import torch

from mlpipe import tracking
from mlpipe.cli import run_stage
from mlpipe.config import load_sections
from mlpipe.data.dataset import load_dataset
from mlpipe.evaluation.metrics import classification_metrics, flat_metrics
from mlpipe.evaluation.plots import save_confusion_matrix
from mlpipe.io import atomic_write_json, atomic_write_text, read_json
from mlpipe.training.checkpoint import load_checkpoint
from mlpipe.training.device import Runtime
from mlpipe.training.engine import predict_logits

log = logging.getLogger("mlpipe.evaluate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--train-report", type=Path, required=True, help="train.json (run id)")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    parser.add_argument("--plots", type=Path, required=True, help="folder for plot files")
    return parser.parse_args(argv)


def predictions_csv(y_true: list[int], y_pred: list[int], names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((names[t], names[p]) for t, p in zip(y_true, y_pred, strict=True))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, ["evaluate"])["evaluate"]
        run_id = read_json(args.train_report)["run_id"]
        model, meta = load_checkpoint(args.model_dir / "model.pt")
        test = load_dataset(args.data).splits["test"]
        names = meta["class_names"]
        logits = predict_logits(
            model, torch.from_numpy(test.images), cfg.batch_size, Runtime(torch.device("cpu"), None)
        )
        y_pred = logits.argmax(dim=1).numpy()
        metrics = classification_metrics(test.labels, y_pred, names)
        png = args.plots / "confusion_matrix.png"
        save_confusion_matrix(
            metrics["confusion_matrix"],
            names,
            png,
            f"Test confusion matrix (accuracy {metrics['accuracy']:.4f})",
        )
        atomic_write_text(
            args.plots / "predictions.csv",
            predictions_csv(test.labels.tolist(), y_pred.tolist(), names),
        )
        atomic_write_json(args.metrics, metrics)
        with tracking.resume_run(run_id):
            tracking.log_metrics(flat_metrics(metrics))
            tracking.log_artifact(png, "evaluation")
            tracking.log_artifact(args.metrics, "evaluation")
        log.info(
            "test accuracy %.4f, macro-F1 %.4f on %d images (run %s)",
            metrics["accuracy"],
            metrics["macro_f1"],
            metrics["n"],
            run_id,
        )

    return run_stage("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
