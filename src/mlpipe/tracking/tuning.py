"""A search's MLflow records: one parent run per study, one child run per trial.

The parent is made once, by `mlpipe tune start` (its id is kept in the study, so workers
on other machines find it); each trial logs into its own child run with the client API
(no active-run state, so nothing leaks between trials of one worker).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException

from mlpipe.config import flatten
from mlpipe.errors import TrackingError
from mlpipe.tracking import runs, store

STUDY_TAG = "mlpipe.study"
TRIAL_TAG = "mlpipe.trial"


def _fail(exc: MlflowException) -> TrackingError:
    return TrackingError(f"MLflow store {store.display_uri()}: {exc.message}")


def study_run(experiment: str, study: str, space: dict[str, Any]) -> str:
    """The study's parent run (created; RUNNING until `finish_study_run`)."""
    try:
        exp_id = store.setup(experiment)
        c = store.client()
        run = c.create_run(
            exp_id, run_name=f"tune-{study}", tags={STUDY_TAG: study, **runs.run_tags("tune")}
        )
        c.log_batch(run.info.run_id, params=_params(flatten({"tune": space})))
    except MlflowException as exc:
        raise _fail(exc) from None
    return str(run.info.run_id)


def finish_study_run(run_id: str, best: dict[str, float], images: list[Path]) -> None:
    try:
        c = store.client()
        now = int(time.time() * 1000)
        c.log_batch(run_id, metrics=[Metric(f"best/{k}", v, now, 0) for k, v in best.items()])
        for image in images:
            c.log_artifact(run_id, str(image), "tune")
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except MlflowException as exc:
        raise _fail(exc) from None


class TrialRun:
    """A trial's child run: params at the start, a row per epoch, its state at the end."""

    def __init__(self, parent: str, study: str, number: int, params: dict[str, str]) -> None:
        try:
            c = store.client()
            exp_id = c.get_run(parent).info.experiment_id
            tags = {
                "mlflow.parentRunId": parent,
                STUDY_TAG: study,
                TRIAL_TAG: str(number),
                **runs.owner_tags(),
            }
            self.run_id = str(
                c.create_run(exp_id, run_name=f"trial-{number}", tags=tags).info.run_id
            )
            c.log_batch(self.run_id, params=_params(params))
        except MlflowException as exc:
            raise _fail(exc) from None

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        store.client().log_batch(self.run_id, metrics=rows)

    def finish(self, state: str, value: float | None) -> None:
        """state: COMPLETE | PRUNED | FAIL (Optuna's), kept as a tag; the run's status
        is FINISHED for a complete or pruned trial, FAILED otherwise."""
        c = store.client()
        c.set_tag(self.run_id, "mlpipe.trial_state", state)
        if value is not None:
            c.log_metric(self.run_id, "objective", value)
        status = RunStatus.FAILED if state == "FAIL" else RunStatus.FINISHED
        c.set_terminated(self.run_id, RunStatus.to_string(status))


def mark_killed(run_id: str) -> None:
    """A trial run whose worker died (Optuna failed the trial after its heartbeats stopped)."""
    c = store.client()
    c.set_tag(run_id, "mlpipe.trial_state", "FAIL")
    c.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def _params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in values.items()]
