"""Stage `evaluate`: metrics on the held-out test set, logged to the pipeline's MLflow run.

Writes evaluate.json (the headline test metrics, ECE among them: DVC metrics),
evaluate_details.json (per class, calibration, top confusions: what register reads), one
predicted class per test image, the confusion matrix, the reliability diagram, the most
frequent confusions (CSV), a gallery of the most confident mistakes and Integrated
Gradients maps for one test image per class.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from mlpipe.config import load_sections
from mlpipe.dataset import open_dataset
from mlpipe.evaluate import calibration
from mlpipe.evaluate.config import EvaluateConfig
from mlpipe.evaluate.explain import attention_rollout, integrated_gradients, sample_per_class
from mlpipe.evaluate.metrics import (
    classification_metrics,
    flat_metrics,
    headline,
    per_class_table,
    predictions_csv,
)
from mlpipe.evaluate.mistakes import confident_mistakes, confusions_csv, top_confusions
from mlpipe.evaluate.plots import (
    save_attribution_grid,
    save_confusion_matrix,
    save_mistake_gallery,
    save_reliability_diagram,
)
from mlpipe.evaluate.predict import predict_split
from mlpipe.io import atomic_write_json, atomic_write_text, read_json
from mlpipe.models import inference_batch
from mlpipe.models.checkpoint import load_checkpoint
from mlpipe.runner import run_stage
from mlpipe.tracking import runs

log = logging.getLogger("mlpipe.evaluate")
SECTIONS = {"evaluate": EvaluateConfig}
ARTIFACTS = "evaluate"  # where the run keeps evaluate's files
MISTAKES_PER_CLASS = 4  # columns of confident_mistakes.png
IG_STEPS = 32  # Integrated Gradients steps: 1 test image per class, a second or so on a CPU


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--train-report", type=Path, required=True, help="train.json (run id)")
    parser.add_argument(
        "--report", type=Path, required=True, help="evaluate.json: headline metrics (DVC)"
    )
    parser.add_argument(
        "--details",
        type=Path,
        required=True,
        help="evaluate_details.json: also per-class figures and the confusion matrix",
    )
    parser.add_argument("--plots", type=Path, required=True, help="folder for plot files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: EvaluateConfig = load_sections(args.params, SECTIONS)["evaluate"]
        run_id = read_json(args.train_report)["run_id"]
        model, meta = load_checkpoint(args.model_dir / "model.pt")
        test = open_dataset(args.data).splits["test"]  # streamed: pixels stay in shards
        names = meta["class_names"]
        batch = cfg.batch_size or inference_batch(test.image_shape)
        logits = predict_split(model, test, batch)
        y_pred = logits.argmax(dim=1).numpy()
        metrics = classification_metrics(test.labels, y_pred, names)
        # temperature fitted on the val split by train (1.0 for older checkpoints)
        temperature = float(meta.get("temperature", 1.0))
        metrics["calibration"] = calibration.calibration_report(
            logits.numpy(), test.labels, temperature
        )
        metrics["ece"] = metrics["calibration"]["ece"]
        reliability = args.plots / "reliability_diagram.png"
        cal = metrics["calibration"]
        save_reliability_diagram(
            calibration.reliability_bins(calibration.softmax(logits.numpy()), test.labels),
            calibration.reliability_bins(
                calibration.softmax(logits.numpy(), temperature), test.labels
            ),
            reliability,
            f"Test reliability: ECE {cal['ece_uncalibrated']:.4f} -> {cal['ece']:.4f} "
            f"(T = {temperature:.2f})",
        )
        png = args.plots / "confusion_matrix.png"
        title = f"Test confusion matrix (accuracy {metrics['accuracy']:.4f})"
        save_confusion_matrix(metrics["confusion_matrix"], names, png, title)
        # error analysis: the most frequent confusions and the most confident mistakes
        metrics["top_confusions"] = top_confusions(metrics["confusion_matrix"], names)
        confusions = args.plots / "confusions.csv"
        atomic_write_text(confusions, confusions_csv(metrics["top_confusions"]))
        probs = calibration.softmax(logits.numpy(), temperature)
        gallery = args.plots / "confident_mistakes.png"
        picks = confident_mistakes(probs, test.labels, MISTAKES_PER_CLASS)
        shown = sorted({i for row in picks for i in row})  # read only the images shown
        at = {i: k for k, i in enumerate(shown)}
        compact = [[at[i] for i in row] for row in picks]
        save_mistake_gallery(test.read_rows(shown), probs[shown], compact, names, gallery)
        # explanations: Integrated Gradients for the first test image of each class
        sample = sample_per_class(test.labels, len(names))
        sample_images = test.read_rows(sample)
        ig = integrated_gradients(model, sample_images, y_pred[sample], IG_STEPS, sample)
        rollout = attention_rollout(model, sample_images)  # ViT only, else None
        attributions = args.plots / "attributions.png"
        arch = type(model.backbone).__name__
        save_attribution_grid(
            sample_images,
            ig.attributions,
            test.labels[sample],
            ig.targets,
            names,
            attributions,
            f"Integrated Gradients ({arch}), black baseline, {IG_STEPS} steps",
            rollout,
        )
        metrics["explanations"] = {
            "method": "integrated_gradients (captum)",
            "baseline": "black image",
            "steps": IG_STEPS,
            "test_indices": sample,
            "max_abs_completeness_delta": round(float(np.abs(ig.delta).max(initial=0.0)), 6),
            "attention_rollout": rollout is not None,
        }
        csv_text = predictions_csv(test.labels.tolist(), y_pred.tolist(), names)
        atomic_write_text(args.plots / "predictions.csv", csv_text)
        atomic_write_json(args.details, metrics)
        atomic_write_json(args.report, headline(metrics))
        with runs.resume_run(run_id):
            runs.log_metrics(flat_metrics(metrics))
            runs.log_table(per_class_table(metrics), f"{ARTIFACTS}/per_class.json")
            runs.log_artifact(png, ARTIFACTS)
            runs.log_artifact(reliability, ARTIFACTS)
            runs.log_artifact(confusions, ARTIFACTS)
            runs.log_artifact(gallery, ARTIFACTS)
            runs.log_artifact(attributions, ARTIFACTS)
            runs.log_artifact(args.report, ARTIFACTS)
            runs.log_artifact(args.details, ARTIFACTS)
        log.info(
            "test accuracy %.4f, macro-F1 %.4f, ECE %.4f (uncalibrated %.4f) on %d images (run %s)",
            metrics["accuracy"],
            metrics["macro_f1"],
            cal["ece"],
            cal["ece_uncalibrated"],
            metrics["n"],
            run_id,
        )

    return run_stage("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
