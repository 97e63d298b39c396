"""Which MLflow store, and the one client this process talks to it through.

Default store: SQLite `mlflow.db` with artifacts in `mlartifacts/`, both at the
repository root. The root is found also when DVC runs an experiment in a temporary
copy (`.dvc/tmp/exps/...`), so no run is lost with the copy. `MLFLOW_TRACKING_URI`
overrides the store; a user's SQLite store keeps its artifacts in `mlartifacts/` beside it.

A fresh SQLite store is created and migrated once, under a file lock beside it: MLflow's
own first use is not safe when several processes (a `dvc queue start -j 2`) open it at
once. Credentials in a store URI are never printed: `redact` hides them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import mlflow
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlpipe.errors import TrackingError, redact

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
LOCK_TIMEOUT_S = 300.0  # waiting for another process to create or migrate the store


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


def display_uri() -> str:
    """The store's URI as it may be printed or logged."""
    return redact(tracking_uri())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for any other store)."""
    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or not parts.path or parts.path == "/:memory:":
        return None
    return Path(unquote(parts.path[1:]))  # sqlite:///rel.db, sqlite:////abs.db


def lock_for(db: Path, purpose: str) -> FileLock:
    """A file lock beside the SQLite file `db` (fcntl: freed when its holder dies)."""
    return FileLock(f"{db}.{purpose}.lock", timeout=LOCK_TIMEOUT_S)


@functools.cache
def ensure_store(uri: str) -> None:
    """Create and migrate a SQLite store once, under a file lock (other stores: no-op)."""
    db = sqlite_path(uri)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with lock_for(db, "init"):
            probe = MlflowClient(tracking_uri=uri)  # builds both stores: tables, migrations
            probe.search_experiments(max_results=1)
            probe.search_registered_models(max_results=1)
    except Timeout:
        raise TrackingError(
            f"MLflow store {redact(uri)}: still locked by another process after "
            f"{LOCK_TIMEOUT_S:.0f} s ({db}.init.lock)"
        ) from None
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {redact(uri)}: {redact(exc.message)}") from None


def quiet_progress() -> None:
    """No "Downloading artifacts" bars from MLflow in the middle of a stage's log (the user
    can still turn them on with MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def connect() -> str:
    """Point the fluent API (mlflow.start_run, ...) at the store; return its URI."""
    global _exported_uri, _user_override
    quiet_progress()
    _user_override = _user_uri()
    uri = tracking_uri()
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    _exported_uri = uri
    return uri


def client() -> MlflowClient:
    """The process's client for the current store (one per store URI, made once)."""
    return _client_for(tracking_uri())


@functools.cache
def _client_for(uri: str) -> MlflowClient:
    quiet_progress()
    ensure_store(uri)
    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite file, in the repository for
    another database URI (MLflow's default, ./mlruns in the current directory, would be
    inside a DVC experiment's temporary copy and deleted with it), and wherever the
    server says for a tracking server."""
    db = sqlite_path(uri)
    if db is not None:
        return (db.resolve().parent / ARTIFACTS_DIR).as_uri()
    if urlsplit(uri).scheme in ("http", "https", "databricks"):
        return None
    return (project_root() / ARTIFACTS_DIR).as_uri()


# The MLflow 3 UI opens an experiment of this kind on its runs and model-training views
# (not the GenAI overview of traces and token usage); the UI's own value for it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def setup(experiment: str) -> str:
    """Point mlflow at the store and select (or create) `experiment`; return its id."""
    connect()
    try:
        exp_id = _get_or_create(experiment)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {display_uri()}: {redact(exc.message)}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _get_or_create(experiment: str) -> str:
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = artifact_location(tracking_uri())
        try:
            return str(
                mlflow.create_experiment(
                    experiment,
                    artifact_location=location,
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
                )
            )
        except MlflowException:
            found = mlflow.get_experiment_by_name(experiment)  # made at the same moment?
            if found is None:
                raise
    exp_id = str(found.experiment_id)
    if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older mlpipe
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp_id


def experiment_id(experiment: str) -> str | None:
    """The id of `experiment` in the current store, or None (nothing is created)."""
    try:
        found = client().get_experiment_by_name(experiment)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {display_uri()}: {redact(exc.message)}") from None
    return None if found is None else str(found.experiment_id)


def ui_command(uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """`mlflow ui` for a local store: one worker and no job runner (the defaults start about
    16 processes, 3.2 GiB, for the GenAI features). The command and its extra environment."""
    exe = str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    return [*cmd, "--workers", "1"], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
