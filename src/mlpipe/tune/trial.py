"""One trial's training: exactly what the train stage fits for the same params (the same
seed, model, data and engine), without the resume file, the logged model or MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlpipe.compose import compose_checked
from mlpipe.config import Schema, load_section
from mlpipe.dataset import ImageDataset
from mlpipe.models import schema_for
from mlpipe.train.config import RuntimeConfig, TrainConfig
from mlpipe.train.device import runtime_for
from mlpipe.train.engine import EpochCallback, History, fit
from mlpipe.train.stage import model_and_splits

SECTIONS: dict[str, Schema] = {"model": schema_for, "train": TrainConfig, "runtime": RuntimeConfig}


def trial_config(repo_root: Path, overrides: list[str]) -> dict[str, Any]:
    """params.yaml for `overrides` (as `dvc exp run -S` composes it), its sections loaded
    and checked: a bad override or value is a one-line ConfigError."""
    return trial_config_from(yaml.safe_load(compose_checked(repo_root, overrides)), overrides)


def composed_params(repo_root: Path, overrides: list[str]) -> dict[str, Any]:
    """The composed params.yaml as plain data, its tunable sections checked."""
    params: dict[str, Any] = yaml.safe_load(compose_checked(repo_root, overrides))
    trial_config_from(params, overrides)
    return params


def trial_config_from(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    where = f"params.yaml with {' '.join(overrides) or 'no overrides'}"
    return {name: load_section(params, name, schema, where) for name, schema in SECTIONS.items()}


def train_trial(
    cfg: dict[str, Any], data: ImageDataset, on_epoch_end: EpochCallback | None
) -> History:
    """The train stage's `fit` for `cfg` (mlpipe.train.stage.train, less its bookkeeping:
    the resume file, the MLflow run, the logged model and temperature scaling)."""
    runtime = runtime_for(cfg["runtime"])
    model, train, val = model_and_splits(cfg, data)
    return fit(model, train, val, cfg["train"], runtime, on_epoch_end)
