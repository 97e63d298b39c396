"""The `evaluate` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from mlpipe.config import check


@dataclass
class EvaluateConfig:
    # test images per inference batch; null: sized by the image (mlpipe.models.inference_batch:
    # 1,000 at 28x28, 75 at 96x96 RGB), so that memory does not grow with the image size
    batch_size: int | None = None

    def __post_init__(self) -> None:
        check(
            self.batch_size is None or self.batch_size > 0,
            "batch_size",
            f"must be > 0, or null, got {self.batch_size}",
        )
