"""The `evaluate` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from mlpipe.config import check


@dataclass
class EvaluateConfig:
    batch_size: int = 1000

    def __post_init__(self) -> None:
        check(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
