"""The validate stage's data checks, on a batch without labels.

The suite is the validate stage's own (`mlpipe.validate.expectations.BUILDERS`, run by
`mlpipe.validate.gx`), limited to the checks that make sense for unlabelled production
images, with the severities and bounds of params.yaml's `validate` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mlpipe.dataset import ImageDataset, ImageSplit
from mlpipe.monitor.batch import Batch
from mlpipe.validate.config import ValidateConfig
from mlpipe.validate.expectations import ExpectationSpec, build_specs
from mlpipe.validate.gx import ValidationReport, run_suite
from mlpipe.validate.table import image_table

SPLIT = "batch"
# what an unlabelled batch can be checked for; labels, class counts, duplicates and
# leakage are training-data questions
CHECKS = ["schema", "types", "not_null", "unique_ids", "shape", "pixel_range", "blank"]


@dataclass
class BatchFacts:
    """`DataFacts` (what the suite builders need) for the model's input."""

    class_names: list[str]
    channels: int
    image_size: int


def batch_specs(cfg: ValidateConfig, facts: BatchFacts) -> list[ExpectationSpec]:
    """The validate suite's specs for CHECKS, on a single split named `batch`."""
    cfg = dataclasses.replace(cfg, rows={SPLIT: [1, None]})
    return [s for s in build_specs(cfg, facts) if s.check in CHECKS]


def check_batch(batch: Batch, cfg: ValidateConfig, facts: BatchFacts) -> ValidationReport:
    """Run the checks with Great Expectations on the batch's per-image table."""
    split = ImageSplit(batch.images, np.zeros(len(batch.images), dtype=np.int64), batch.ids)
    table = image_table(ImageDataset({SPLIT: split}, facts.class_names, batch.source))
    return run_suite(table, batch_specs(cfg, facts))
