"""`mlpipe monitor`'s body (loaded by `mlpipe.monitor.command.main` only): find the
reference, read the batch, run the data checks and the drift tests, write the report, log."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe.config import load_section, read_params
from mlpipe.errors import MlpipeError
from mlpipe.io import atomic_write_json
from mlpipe.monitor import batch as batches
from mlpipe.monitor import report as rep
from mlpipe.monitor.checks import BatchFacts, check_batch
from mlpipe.monitor.command import PROG, fail
from mlpipe.monitor.reference import NoReference, Reference, embed, load_reference
from mlpipe.monitor.report import Exit
from mlpipe.monitor.stats import PIXEL_FEATURES, DriftResult, detect_drift, pixel_features
from mlpipe.runner import error_line
from mlpipe.tracking import monitoring
from mlpipe.validate.config import ValidateConfig
from mlpipe.validate.gx import ValidationReport


def run(args: argparse.Namespace) -> int:
    """Reference, batch, checks, drift, report, log; the exit code."""
    version = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.reference is not None:
                ref = load_reference(args.reference)
            else:
                version = monitoring.resolve(args.model)
                ref = load_reference(monitoring.download_reference(version, Path(tmp)))
            batch = batches.load_batch(args.images)
            batches.check_shape(batch, ref.image_shape)
            code, files, metrics = check_and_report(args, ref, batch, version)
    except monitoring.StoreUnreachable as exc:
        return fail(Exit.store_unreachable, exc)
    except NoReference as exc:
        where = f"{version.uri} (run {version.run_id}): " if version else ""
        return fail(Exit.no_reference, MlpipeError(f"{where}{exc}"))
    except MlpipeError as exc:
        return fail(Exit.bad_input, exc)
    if not args.no_log:
        code = max(code, _log(args, version, metrics, files, code))
    return int(code)


def validate_config(path: Path) -> ValidateConfig:
    """params.yaml's `validate` section when there is one, else the defaults."""
    params = read_params(path) if path.is_file() else {}
    section = {"validate": params.get("validate") or {}}
    cfg: ValidateConfig = load_section(section, "validate", ValidateConfig, str(path))
    return cfg


def check_and_report(
    args: argparse.Namespace, ref: Reference, batch: batches.Batch, version: Any
) -> tuple[Exit, list[Path], dict[str, float]]:
    facts = BatchFacts(ref.class_names, ref.image_shape[0], ref.image_shape[1])
    checks = check_batch(batch, validate_config(args.params), facts)
    in_range = batch.images.min() >= 0 and batch.images.max() <= 255
    drift = compare(ref, batch.images, args.alpha) if in_range else None
    code = rep.outcome(checks, drift)
    lines = rep.finding_lines(checks, drift, len(batch.images), ref.class_names)
    for line in lines:
        print(f"{PROG}: {line}")
    model = (
        {"reference": str(args.reference)}
        if version is None
        else vars(version) | {"uri": args.model}
    )
    info = {"source": batch.source, "images": len(batch.images),
            "shape": list(batch.images.shape[1:])}  # fmt: skip
    report = rep.build_report(code, model, info, checks, drift, lines)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / rep.REPORT_JSON, report)
    files = [args.out / rep.REPORT_JSON]
    if drift is not None:
        title = f"{args.model or args.reference}: {len(batch.images)} images from {batch.source}"
        means = (ref.pixels[:, 0], pixel_features(batch.images)[:, 0])
        rep.save_summary(args.out / rep.SUMMARY_PNG, drift, means, ref.class_names, title)
        files.append(args.out / rep.SUMMARY_PNG)
    return code, files, summary_metrics(code, checks, drift, len(batch.images))


def compare(ref: Reference, images: Any, alpha: float) -> DriftResult:
    """Pixel features, embeddings and predicted classes of the batch vs the reference."""
    assert ref.probe is not None
    embeddings, predicted = embed(ref.probe, images)
    dims = [f"dim {i}" for i in range(embeddings.shape[1])]
    counts = np.bincount(predicted, minlength=len(ref.class_names))
    return detect_drift(
        {"pixels": ref.pixels, "embeddings": ref.embeddings},
        {"pixels": pixel_features(images), "embeddings": embeddings},
        (ref.class_counts, counts),
        alpha,
        {"pixels": PIXEL_FEATURES, "embeddings": dims},
    )


def summary_metrics(
    code: Exit, checks: ValidationReport, drift: DriftResult | None, n: int
) -> dict[str, float]:
    out = {"images": float(n), "exit_code": float(code), "data_checks_failed": checks.failed_errors}
    if drift is not None:
        out["drift"] = float(drift.drift)
        for f in drift.families:
            out[f"{f.name}_min_p"] = f.min_p
            out[f"{f.name}_drifted"] = float(len(f.drifted))
    return out


def _log(
    args: argparse.Namespace, version: Any, metrics: dict[str, float], files: list[Path], code: Exit
) -> Exit:
    """Log the report to MLflow; a store that cannot be reached is exit 5 for --model,
    and only a note for --reference (the monitor then ran without any store)."""
    try:
        if version is None:
            monitoring.probe_store()
        tags = {"monitor.outcome": code.name, "monitor.images": str(args.images)}
        run_id = monitoring.log_monitoring(version, metrics, tags, files)
        if version is not None:
            monitoring.link_version(version, run_id, code.name)
    except monitoring.StoreUnreachable as exc:
        if version is None:
            print(f"{PROG}: note: report not logged: {exc}", file=sys.stderr)
            return Exit.ok
        print(error_line(PROG, exc), file=sys.stderr)
        return Exit.store_unreachable
    print(f"{PROG}: logged to MLflow run {run_id} (experiment {monitoring.EXPERIMENT})",
          file=sys.stderr)  # fmt: skip
    return Exit.ok
