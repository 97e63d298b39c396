"""`mlpipe monitor`: compare a batch of incoming images with a model version's reference.

    mlpipe monitor --model models:/fashion-mnist@champion --images incoming/ [--out DIR]
                   [--alpha 0.01] [--no-log]
    mlpipe monitor --reference models/monitor --images batch.npz    (no store needed)

One line per finding on stdout; the JSON report and a PNG summary in --out; a run in the
MLflow experiment `mlpipe-monitor` (and tags on the model version) when the store is
reachable. Exit codes (the highest that applies): 0 no finding, 1 drift, 2 a data check
of severity error failed, 3 bad input (unreadable batch, empty folder, wrong shape or
channels, unknown model URI), 4 the version has no monitoring reference, 5 the MLflow
store cannot be reached. False alarms: at most `alpha` of in-distribution batches are
flagged (Bonferroni over every test; see mlpipe.monitor.stats).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlpipe.config import load_section, read_params
from mlpipe.errors import ConfigError, MlpipeError
from mlpipe.io import atomic_write_json
from mlpipe.monitor import batch as batches
from mlpipe.monitor import report as rep
from mlpipe.monitor.reference import NoReference, Reference, embed, load_reference
from mlpipe.monitor.report import Exit
from mlpipe.monitor.stats import PIXEL_FEATURES, DriftResult, detect_drift, pixel_features
from mlpipe.runner import error_line
from mlpipe.validate.config import ValidateConfig
from mlpipe.validate.gx import ValidationReport

PROG = "mlpipe monitor"
DEFAULT_OUT = Path("monitor_reports")
log = logging.getLogger(__name__)


def add_parser(groups: Any) -> None:
    """The `monitor` subcommand on `mlpipe`'s subparsers."""
    p = groups.add_parser("monitor", help="drift and data checks on incoming images",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="models:/<name>@<alias> or models:/<name>/<version>")
    where.add_argument("--reference", type=Path, help="a reference folder (models/monitor)")
    p.add_argument("--images", type=Path, required=True, help="a folder of images or an .npz")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}/")
    p.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate per batch")
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="its `validate` sets the checks"
    )
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")


def main(args: argparse.Namespace) -> int:
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if not 0.0 < args.alpha < 1.0:
        return _fail(Exit.bad_input, ConfigError(f"--alpha must be in (0, 1), got {args.alpha}"))
    from mlpipe.tracking import monitoring

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
        return _fail(Exit.store_unreachable, exc)
    except NoReference as exc:
        where = f"{version.uri} (run {version.run_id}): " if version else ""
        return _fail(Exit.no_reference, MlpipeError(f"{where}{exc}"))
    except MlpipeError as exc:
        return _fail(Exit.bad_input, exc)
    if not args.no_log:
        code = max(code, _log(args, version, metrics, files, code))
    return int(code)


def _fail(code: Exit, exc: BaseException) -> int:
    print(error_line(PROG, exc), file=sys.stderr)
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
    from mlpipe.monitor.checks import BatchFacts, check_batch

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
    import numpy as np

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
    from mlpipe.tracking import monitoring

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
