"""The only module that imports mlflow.

Default store: SQLite `mlflow.db` with artifacts in `mlartifacts/`, both at the
repository root. The root is found also when DVC runs an experiment in a temporary
copy (`.dvc/tmp/exps/...`), so no run is lost with the copy. `MLFLOW_TRACKING_URI`
overrides the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlpipe.errors import TrackingError

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def project_root(start: Path | None = None) -> Path:
    """The repository root, never a DVC experiment's temporary copy of it."""
    path = Path(os.environ.get("DVC_ROOT") or start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


# mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; remember what we exported so it
# is not mistaken for the user's own override (matters when one process runs many stages).
_exported_uri: str | None = None


def _user_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri == _exported_uri else uri


def tracking_uri(root: Path | None = None) -> str:
    return _user_uri() or f"sqlite:///{project_root(root) / DB_NAME}"


def _uses_default_store() -> bool:
    return _user_uri() is None


def _connect() -> None:
    global _exported_uri
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    _exported_uri = uri


def setup(experiment: str) -> str:
    """Point mlflow at the store and select (or create) `experiment`; return its id."""
    _connect()
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            exp_id = found.experiment_id
        else:
            location = None
            if _uses_default_store():
                location = (project_root() / ARTIFACTS_DIR).as_uri()
            exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {tracking_uri()}: {exc.message}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def run_tags(stage: str) -> dict[str, str]:
    """Lineage tags: git commit and, during `dvc exp run`, the experiment name."""
    tags = {"mlpipe.stage": stage}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for env, tag in [
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev"),
    ]:
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """Open the pipeline execution's run; yields its id."""
    setup(experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        yield run.info.run_id


@contextlib.contextmanager
def resume_run(run_id: str) -> Iterator[str]:
    """Reopen a run started by an earlier stage of the same pipeline execution."""
    _connect()
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run.info.run_id
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} in {tracking_uri()}: {exc.message}") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(getattr(value, "value", value))
    return flat


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(flatten(params))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """One batched call: per-metric calls cost milliseconds each on SQLite."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dict(obj: dict[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_torch_model(
    model: Any, input_example: np.ndarray, output_example: np.ndarray, metadata: dict[str, Any]
) -> str:
    """Log a CPU model with signature and input example; return its `models:/` URI."""
    from mlflow.models import infer_signature

    if len(input_example) < 2:
        # pt2 export specialises on a batch of 1 and then rejects other batch sizes
        raise ValueError("input_example needs a batch of at least 2")
    signature = infer_signature(input_example, output_example)
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        metadata=metadata,
    )
    return str(info.model_uri)


# -- registry ---------------------------------------------------------------------------


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri())


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register `model_uri` under `name`; return the new version number."""
    _connect()
    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise TrackingError(f"registering {model_uri} as {name!r}: {exc.message}") from None
    return str(version.version)


def version_for_alias(name: str, alias: str) -> Any | None:
    """The ModelVersion behind `name@alias`, or None when the alias is unset."""
    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def run_metric(run_id: str, key: str) -> float | None:
    try:
        return client().get_run(run_id).data.metrics.get(key)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)
