"""The `tracking` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from mlpipe.config import check


@dataclass
class TrackingConfig:
    experiment: str = "mlpipe"  # the MLflow experiment the pipeline's runs go to

    def __post_init__(self) -> None:
        check(bool(self.experiment.strip()), "experiment", "must not be empty")
