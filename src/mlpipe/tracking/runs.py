"""The pipeline execution's MLflow run: train opens it, evaluate and register reopen it.

Whoever holds a run open tags it with its host and pid, so a run left RUNNING by a
killed stage is recognised (its process is gone) and marked KILLED by the next train.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import mlflow
import requests
from mlflow.exceptions import MlflowException

from mlpipe.config import flatten
from mlpipe.errors import TrackingError, redact
from mlpipe.tracking import store

log = logging.getLogger(__name__)
HOST_TAG, PID_TAG = "mlpipe.host", "mlpipe.pid"
BASELINE_TAG = "dvc_exp_baseline_rev"
SWEEP_TAG = "mlpipe.sweep"  # on the parent run: the baseline commit it groups
MAX_BATCH_METRICS = 1000  # MLflow's limit per log_batch request
SWEEP_LOCK_WAIT_S = 120.0  # a lookup-or-create takes milliseconds; this waits out a crowd
# What a logging call raises when the store is gone (MLflow wraps most in MlflowException)
LOGGING_FAILURES: tuple[type[Exception], ...] = (
    MlflowException,
    requests.exceptions.RequestException,
    OSError,
    TrackingError,
)


def stop_retrying() -> None:
    """The store is gone: from now on this process's MLflow calls (closing the run) fail at
    once instead of after MLflow's ~4 minutes of retries each."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"


def run_tags(stage: str) -> dict[str, str]:
    """Lineage tags: the stage, the git commit and, during `dvc exp run`, the experiment."""
    tags = {"mlpipe.stage": stage}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for env, tag in [
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("DVC_EXP_BASELINE_REV", BASELINE_TAG),
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


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def close_orphans(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone; return their ids.

    Runs of other hosts are left alone: their processes cannot be checked from here.
    """
    c = store.client()
    found = c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=200)
    here, closed = socket.gethostname(), []
    for run in found:
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) != here or not pid.isdigit() or is_alive(int(pid)):
            continue
        c.set_terminated(run.info.run_id, status="KILLED")
        log.warning("run %s was left RUNNING by process %s, which is gone: marked KILLED",
                    run.info.run_id, pid)  # fmt: skip
        closed.append(str(run.info.run_id))
    return closed


@contextlib.contextmanager
def start_run(
    experiment: str, run_name: str, tags: dict[str, str], system_metrics: bool = False
) -> Iterator[str]:
    """Open the pipeline execution's run; yields its id. During `dvc exp run` (a baseline
    commit in `tags`) the run is a child of the parent that groups the experiments made
    from that commit, a sweep among them. `system_metrics`: MLflow samples CPU, memory
    (psutil) and, with nvidia-ml-py, GPU use while the run is open."""
    exp_id = store.setup(experiment)
    try:
        close_orphans(exp_id)
        baseline = tags.get(BASELINE_TAG)
        parent = sweep_parent(exp_id, baseline) if baseline else None
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {store.display_uri()}: {exc.message}") from None
    with mlflow.start_run(
        run_name=run_name,
        tags=tags | owner_tags(),
        parent_run_id=parent,
        log_system_metrics=system_metrics,
    ) as run:
        yield str(run.info.run_id)


def sweep_parent(exp_id: str, baseline: str) -> str:
    """The parent run of the experiments from `baseline` (a commit): found, else made.

    Experiments started together (`dvc queue start -j 2`) look for it at the same moment:
    the lookup and the creation hold a lock (a file lock beside a SQLite store, a lease in
    the registry of any other store), so exactly one of them makes it.
    """
    from mlpipe.tracking import registry  # registry imports nothing of this module

    c = store.client()
    query = f"tags.`{SWEEP_TAG}` = '{baseline}'"
    with registry.locked(f"mlpipe-sweeps-{exp_id}", wait_s=SWEEP_LOCK_WAIT_S, purpose="sweep"):
        found = c.search_runs([exp_id], query, max_results=50)
        if found:  # the oldest, should an older mlpipe have left several
            oldest = min(found, key=lambda r: (r.info.start_time, r.info.run_id))
            return str(oldest.info.run_id)
        made = c.create_run(
            exp_id, run_name=f"experiments from {baseline[:8]}", tags={SWEEP_TAG: baseline}
        )
        c.set_terminated(made.info.run_id)  # a folder for the runs, not a computation
        return str(made.info.run_id)


@contextlib.contextmanager
def resume_run(run_id: str) -> Iterator[str]:
    """Reopen a run started by an earlier stage of the same pipeline execution."""
    uri = store.connect()
    try:
        with mlflow.start_run(run_id=run_id) as run:
            mlflow.set_tags(owner_tags())  # this process holds it now
            yield str(run.info.run_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} in {redact(uri)}: {exc.message}") from None


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(flatten(params))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """One batched call: per-metric calls cost milliseconds each on SQLite."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_series(points: list[tuple[str, float, int]]) -> None:
    """(key, value, step) points in a few batched requests (per-step curves)."""
    from mlflow.entities import Metric

    active = mlflow.active_run()
    if active is None or not points:
        return
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step) for key, value, step in points]
    client = store.client()
    for i in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(active.info.run_id, metrics=metrics[i : i + MAX_BATCH_METRICS])


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(folder: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def artifact_link(run_id: str, artifact_path: str) -> str:
    """A link to a run's artifact that works in markdown rendered by the MLflow UI (a model
    version's description): relative to the UI's root, so it holds behind a path prefix
    too. A path relative to the card itself resolves against the UI page and 404s."""
    query = urlencode({"path": artifact_path, "run_uuid": run_id})
    return f"get-artifact?{query}"


def log_table(columns: dict[str, list[Any]], artifact_file: str) -> None:
    """A table artifact the run page shows as one table (mlflow.log_table)."""
    mlflow.log_table(data=columns, artifact_file=artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


@dataclass
class RunView:
    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


def get_run(run_id: str) -> RunView:
    try:
        run = store.client().get_run(run_id)
    except MlflowException as exc:
        uri = store.tracking_uri()
        raise TrackingError(f"MLflow run {run_id} in {redact(uri)}: {exc.message}") from None
    return RunView(run_id, dict(run.data.params), dict(run.data.tags), dict(run.data.metrics))
