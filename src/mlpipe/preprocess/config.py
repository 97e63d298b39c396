"""The `preprocess` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from mlpipe.config import check


@dataclass
class PreprocessConfig:
    val_fraction: float = 0.1  # of the train split, stratified by class
    split_seed: int = 42  # same seed, same split

    def __post_init__(self) -> None:
        check(
            0.0 < self.val_fraction < 1.0,
            "val_fraction",
            f"must be in (0, 1), got {self.val_fraction}",
        )
