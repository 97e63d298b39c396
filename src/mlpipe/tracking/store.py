"""Which MLflow store, and the one client this process talks to it through.

Default store: SQLite `mlflow.db` with artifacts in `mlartifacts/`, both at the
repository root. The root is found also when DVC runs an experiment in a temporary
copy (`.dvc/tmp/exps/...`), so no run is lost with the copy. `MLFLOW_TRACKING_URI`
overrides the store.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlpipe.errors import TrackingError

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
# is not mistaken for the user's own override (matters when one process runs many stages),
# and whether the user had set that very value before we exported it.
_exported_uri: str | None = None
_user_override: str | None = None


def _user_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None or uri != _exported_uri:
        return uri
    return _user_override


def tracking_uri(root: Path | None = None) -> str:
    return _user_uri() or f"sqlite:///{project_root(root) / DB_NAME}"


def uses_default_store() -> bool:
    return _user_uri() is None


def connect() -> str:
    """Point the fluent API (mlflow.start_run, ...) at the store; return its URI."""
    global _exported_uri, _user_override
    _user_override = _user_uri()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    _exported_uri = uri
    return uri


def client() -> MlflowClient:
    """The process's client for the current store (one per store URI, made once)."""
    return _client_for(tracking_uri())


@functools.cache
def _client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def setup(experiment: str) -> str:
    """Point mlflow at the store and select (or create) `experiment`; return its id."""
    connect()
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            exp_id = str(found.experiment_id)
        else:
            location = None
            if uses_default_store():
                location = (project_root() / ARTIFACTS_DIR).as_uri()
            exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {tracking_uri()}: {exc.message}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
