"""`mlpipe monitor`'s contact with MLflow: the reference stored with a model version's
run (written by the register stage, read by the monitor), and the monitor's own runs.

Three kinds of trouble are told apart, since `mlpipe monitor` exits differently on each:
the store cannot be reached (`StoreUnreachable`), the model URI names nothing
(`UnknownModel`), the version's run has no reference (`mlpipe.monitor.reference.NoReference`,
raised by the caller when the downloaded folder is empty).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError, first_line, redact
from mlpipe.tracking import runs, store

REFERENCE_DIR = "monitor"  # on the model version's run
EXPERIMENT = "mlpipe-monitor"  # where the monitor's own runs go
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class StoreUnreachable(TrackingError):
    """The MLflow store cannot be reached or read."""


class UnknownModel(TrackingError):
    """The model URI names no registered model, version or alias."""


@dataclass
class ModelVersion:
    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def log_reference(run_id: str, folder: str | Path) -> None:
    """Log a reference folder on the run, under `monitor/`."""
    with runs.resume_run(run_id):
        runs.log_artifacts(folder, REFERENCE_DIR)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/<name>@<alias> or models:/<name>/<version> -> (name, alias, version)."""
    found = _URI.match(uri)
    if found is None:
        raise UnknownModel(
            f"model URI {uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    return found["name"], found["alias"], found["version"]


def probe_store() -> None:
    """Fail with StoreUnreachable unless the store answers a read; never creates one."""
    uri = store.tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise StoreUnreachable(
            f"no MLflow store at {redact(uri)} (set MLFLOW_TRACKING_URI to the store "
            "that holds the model)"
        )
    try:
        store.client().search_registered_models(max_results=1)
    except TrackingError as exc:
        raise StoreUnreachable(str(exc)) from None
    except Exception as exc:  # requests, sqlalchemy, OS errors, wrapped or not
        raise StoreUnreachable(f"MLflow store {redact(uri)}: {redact(first_line(exc))}") from None


def resolve(uri: str) -> ModelVersion:
    """The registered version a models:/ URI names (an alias is read now)."""
    name, alias, version = parse_model_uri(uri)
    probe_store()
    c = store.client()
    try:
        mv = (
            c.get_model_version_by_alias(name, alias)
            if alias
            else c.get_model_version(name, str(version))
        )
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise UnknownModel(f"{uri}: {first_line(exc)}") from None
        raise StoreUnreachable(f"{uri}: {redact(first_line(exc))}") from None
    if not mv.run_id:
        raise UnknownModel(f"{uri}: version {mv.version} has no run (not logged by mlpipe)")
    return ModelVersion(name, str(mv.version), str(mv.run_id))


def download_reference(version: ModelVersion, dest: Path) -> Path:
    """The version's run's `monitor/` folder, downloaded under `dest`; an empty folder
    when the run has none (the caller's load then says so)."""
    c = store.client()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one line per finding
    try:
        listed = c.list_artifacts(version.run_id, REFERENCE_DIR)
        if not listed:
            out = dest / REFERENCE_DIR
            out.mkdir(parents=True, exist_ok=True)
            return out
        return Path(c.download_artifacts(version.run_id, REFERENCE_DIR, str(dest)))
    except MlflowException as exc:
        raise StoreUnreachable(
            f"{version.uri}: reading run {version.run_id}'s artifacts: {redact(first_line(exc))}"
        ) from None
    except OSError as exc:
        raise StoreUnreachable(
            f"{version.uri}: reading run {version.run_id}'s artifacts: {first_line(exc)}"
        ) from None


def log_monitoring(
    version: ModelVersion | None,
    metrics: dict[str, float],
    tags: dict[str, str],
    files: list[Path],
) -> str:
    """One run in the `mlpipe-monitor` experiment: the batch's figures, its report files,
    tagged with the model version watched. Returns the run id."""
    try:
        store.setup(EXPERIMENT)
        model_tags = {}
        if version is not None:
            model_tags = {
                "model_name": version.name,
                "model_version": version.version,
                "model_run_id": version.run_id,
            }
        with mlflow.start_run(run_name="monitor", tags=tags | model_tags) as run:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            for path in files:
                mlflow.log_artifact(str(path))
            return str(run.info.run_id)
    except MlflowException as exc:
        raise StoreUnreachable(f"logging the report: {redact(first_line(exc))}") from None


def link_version(version: ModelVersion, run_id: str, outcome: str) -> dict[str, Any]:
    """Note the latest check on the model version (tags), so the registry shows it."""
    tags = {"monitor.last_run": run_id, "monitor.last_outcome": outcome}
    try:
        for key, value in tags.items():
            store.client().set_model_version_tag(version.name, version.version, key, value)
    except MlflowException as exc:
        raise StoreUnreachable(f"tagging {version.uri}: {redact(first_line(exc))}") from None
    return tags
