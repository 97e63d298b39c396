"""Stage `register`: a new registry version; champion only on evidence (see mlpipe.registry)."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlpipe import registry, tracking
from mlpipe.cli import run_stage
from mlpipe.config import RegisterConfig, load_sections
from mlpipe.data.dataset import load_dataset
from mlpipe.errors import DataError
from mlpipe.export import export_and_check
from mlpipe.io import atomic_write_json, read_json
from mlpipe.model_card import build_model_card
from mlpipe.training.checkpoint import load_checkpoint

log = logging.getLogger("mlpipe.register")
CONFUSION_IMAGE = "evaluation/confusion_matrix.png"  # where evaluate logs it on the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--train-report", type=Path, required=True, help="train.json")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics.json")
    parser.add_argument("--predictions", type=Path, required=True, help="evaluate's CSV")
    parser.add_argument("--data", type=Path, required=True, help="processed dataset folder")
    parser.add_argument("--model-dir", type=Path, required=True, help="holds model.pt")
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="for data lineage")
    parser.add_argument("--out", type=Path, required=True, help="registration.json to write")
    return parser.parse_args(argv)


def read_predicted(path: Path) -> list[str]:
    try:
        with path.open(newline="") as fh:
            return [row["predicted"] for row in csv.DictReader(fh)]
    except (OSError, KeyError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable predictions: {exc}") from None


def data_md5(lock: Path, data: Path) -> str | None:
    """md5 DVC recorded for the processed data the train stage used (None outside DVC)."""
    try:
        found = registry.dvc_dep_hash(yaml.safe_load(lock.read_text()) or {}, "train", str(data))
    except (OSError, yaml.YAMLError):
        found = None
    if found is None:
        log.warning("%s: no md5 for %s in stage train; lineage says unknown", lock, data)
    return found


def assess(
    args: argparse.Namespace, cfg: RegisterConfig, train: dict, dataset: Any, export_dir: Path
) -> tuple[registry.Decision, dict[str, Any], registry.Evaluation]:
    """Evaluate candidate and champion on the test set, export and check; decide."""
    test, names = dataset.splits["test"], dataset.class_names
    evaluated, accuracy = read_predicted(args.predictions), read_json(args.metrics).get("accuracy")
    model, _ = load_checkpoint(args.model_dir / "model.pt")
    labels = tracking.predict_labels(train["model_uri"], test.images, names)
    candidate = registry.evaluate_labels(test.labels, labels, names)
    checks = [registry.agreement_problem(labels, evaluated)]
    champion, champion_version, champion_error = tracking.evaluate_alias(
        cfg.model_name, cfg.champion_alias, test.images, test.labels, names
    )
    images = test.images[: cfg.parity_images]
    parity = export_and_check(model, images, export_dir, cfg.export_tolerance)
    checks += [c.summary() for c in parity.values() if not c.passed]
    failed = [c for c in checks if c]
    decision = registry.decide(candidate, champion, cfg, champion_version, champion_error, failed)
    report = {
        **decision.to_dict(),
        "candidate_metrics": registry.summary_metrics(candidate.metrics),
        "champion_metrics": registry.summary_metrics(champion.metrics) if champion else None,
        "evaluate_accuracy": accuracy,
        "exports": {fmt: c.to_dict() for fmt, c in parity.items()},
    }
    return decision, report, candidate


def card_builder(
    cfg: RegisterConfig, dataset: Any, candidate: registry.Evaluation, report: dict, run: Any
) -> Any:
    """version -> the model card's markdown."""

    def card(version: str) -> str:
        return build_model_card(
            model={"name": cfg.model_name, "version": version},
            data={
                "source": dataset.source,
                "class_names": dataset.class_names,
                "md5": report["lineage"]["data_md5"],
                "splits": {k: len(v) for k, v in dataset.splits.items()},
            },
            metrics=candidate.metrics,
            decision=report,
            lineage=report["lineage"],
            params=run.params,
            exports=report["exports"],
            champion_metrics=report["champion_metrics"],
            confusion_image=CONFUSION_IMAGE,
        )

    return card


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg: RegisterConfig = load_sections(args.params, ["register", "tracking"])["register"]
        train, dataset = read_json(args.train_report), load_dataset(args.data)
        tracking.setup(train["experiment"])
        run = tracking.get_run(train["run_id"])
        with tempfile.TemporaryDirectory() as tmp:
            export_dir = Path(tmp) / "export"
            decision, report, candidate = assess(args, cfg, train, dataset, export_dir)
            lineage = registry.lineage(
                run.run_id, run.params, run.tags, data_md5(args.lock, args.data)
            )
            report["lineage"] = {k: v for k, v in lineage.items() if k != "params"}
            report["model_card"] = f"runs:/{run.run_id}/model_card.md"
            tags = registry.version_tags(
                decision,
                report["candidate_metrics"],
                report["champion_metrics"],
                lineage,
                report["exports"],
            )
            card = card_builder(cfg, dataset, candidate, report, run)
            version, aliases = tracking.publish_version(
                cfg, train["model_uri"], run.run_id, decision, tags, export_dir, card
            )
        head = {"model_name": cfg.model_name, "version": version, "aliases": aliases}
        atomic_write_json(args.out, head | {"run_id": run.run_id} | report)
        exported = "; ".join(
            f"{fmt} max diff {c['max_abs_diff']:.1e}" for fmt, c in report["exports"].items()
        )
        log.info("%s v%s %s: %s [%s]", cfg.model_name, version, decision.outcome.value,
                 decision.reason, exported)  # fmt: skip

    return run_stage("register", body)


if __name__ == "__main__":
    sys.exit(main())
