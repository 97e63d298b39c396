"""The register stage's steps, in order: check the candidate (no lock needed), then,
holding the registry lock, decide against the champion current at that moment, register
the run's version (once per run), describe it and move the aliases the decision allows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from mlpipe.dataset import ImageDataset, ShardedDataset
from mlpipe.register import candidate, lineage
from mlpipe.register.config import RegisterConfig
from mlpipe.register.publish import MODEL_CARD, publish
from mlpipe.tracking import registry
from mlpipe.tracking.runs import RunView


def register_candidate(
    cfg: RegisterConfig,
    dataset: ImageDataset,
    scores: dict[str, Any],
    predicted: list[str],
    model: nn.Module,
    model_uri: str,
    run: RunView,
    data_md5: str | None,
    described: ImageDataset | ShardedDataset | None = None,
) -> dict[str, Any]:
    """Register the train run's model; return what reports/register.json records.

    `dataset` needs the test split in memory; the model card describes `described`
    (default: `dataset`), e.g. the whole sharded dataset with its split sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "export"
        checked = candidate.check_candidate(
            cfg, dataset, scores, predicted, model, model_uri, export_dir
        )
        with registry.locked(cfg.model_name):
            found = candidate.assess_candidate(
                cfg, dataset, checked, registry.find_model(cfg.model_name)
            )
            origin = lineage.lineage(run.run_id, run.params, run.tags, data_md5)
            report = found.report
            report["lineage"] = {k: v for k, v in origin.items() if k != "params"}
            report["model_card"] = f"runs:/{run.run_id}/{MODEL_CARD}"
            tags = lineage.version_tags(
                found.decision, report["candidate_metrics"], report["champion_metrics"],
                origin, report["exports"],
            )  # fmt: skip
            card = candidate.card_builder(cfg, described or dataset, found, run)
            record = report | {"params": run.params}  # the run's params, flat
            version, aliases = publish(
                cfg, model_uri, run.run_id, found.decision, tags, export_dir, card, record
            )
    head = {"model_name": cfg.model_name, "version": version, "aliases": aliases}
    return head | {"run_id": run.run_id} | report
