"""The register stage's candidate: its test scores (from evaluate), its checks (every
exported form against PyTorch) and the decision, as plain values for the report.

Checking needs no lock; deciding reads the champion, so it happens under
`registry.locked` together with the alias moves it leads to."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mlpipe.dataset import ImageDataset, ShardedDataset
from mlpipe.errors import DataError
from mlpipe.models.export import export_and_check
from mlpipe.register import promote
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Decision, Evaluation, agreement_problem, summary_metrics
from mlpipe.register.model_card import build_model_card
from mlpipe.tracking import logged_model, runs
from mlpipe.tracking.registry import ModelView
from mlpipe.tracking.runs import RunView

CONFUSION_IMAGE = "evaluate/confusion_matrix.png"  # where evaluate logs it on the run


@dataclass
class Assessment:
    decision: Decision
    candidate: Evaluation
    report: dict[str, Any]  # what reports/register.json records besides the version


def read_predicted(path: Path) -> list[str]:
    """evaluate's predicted class name per test image, in test-set order."""
    try:
        with path.open(newline="") as fh:
            return [row["predicted"] for row in csv.DictReader(fh)]
    except (OSError, KeyError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable predictions: {exc}") from None


@dataclass
class Checked:
    """The candidate before any comparison: its test scores and what its checks found."""

    candidate: Evaluation
    scores: dict[str, Any]  # evaluate's metrics
    exports: dict[str, Any]  # format -> ExportCheck.to_dict()
    failed: list[str]  # why a check failed, one line each


def check_candidate(
    cfg: RegisterConfig,
    dataset: ImageDataset,
    scores: dict[str, Any],
    predicted: list[str],
    model: nn.Module,
    model_uri: str,
    export_dir: Path,
) -> Checked:
    """Check every exported form and the logged model against PyTorch and evaluate.

    `scores` and `predicted` are evaluate's metrics and per-image predictions: the
    candidate is not scored again. Needs no lock: nothing here reads the aliases.
    """
    test, names = dataset.splits["test"], dataset.class_names
    candidate = Evaluation(scores, promote.correctness(predicted, test, names))
    images = test.images[: cfg.parity_images]
    parity = export_and_check(model, images, export_dir, cfg.export_tolerance)
    logged = logged_model.predict_labels(model_uri, images, names)
    checks = [agreement_problem(logged, predicted[: len(images)])]
    checks += [c.summary() for c in parity.values() if not c.passed]
    exports = {fmt: c.to_dict() for fmt, c in parity.items()}
    return Checked(candidate, scores, exports, [c for c in checks if c])


def assess_candidate(
    cfg: RegisterConfig, dataset: ImageDataset, checked: Checked, registered: ModelView | None
) -> Assessment:
    """Decide against the champion that `registered` names (read under registry.locked)."""
    test, names = dataset.splits["test"], dataset.class_names
    decision = promote.assess(cfg, checked.candidate, registered, test, names, checked.failed)
    champion = decision.champion_scores
    report = {
        **decision.to_dict(),
        "candidate_metrics": summary_metrics(checked.scores),
        "champion_metrics": None if champion is None else summary_metrics(champion),
        "evaluate_accuracy": checked.scores.get("accuracy"),
        "exports": checked.exports,
    }
    return Assessment(decision, checked.candidate, report)


def card_builder(
    cfg: RegisterConfig,
    dataset: ImageDataset | ShardedDataset,
    assessment: Assessment,
    run: RunView,
) -> Callable[[str], str]:
    """version -> the model card's markdown."""
    report = assessment.report

    def card(version: str) -> str:
        return build_model_card(
            model={"name": cfg.model_name, "version": version},
            data={
                "source": dataset.source,
                "class_names": dataset.class_names,
                "md5": report["lineage"]["data_md5"],
                "splits": {k: len(v) for k, v in dataset.splits.items()},
            },
            metrics=assessment.candidate.metrics,
            decision=report,
            lineage=report["lineage"],
            params=run.params,
            exports=report["exports"],
            champion_metrics=report["champion_metrics"],
            confusion_image=runs.artifact_link(run.run_id, CONFUSION_IMAGE),
        )

    return card
