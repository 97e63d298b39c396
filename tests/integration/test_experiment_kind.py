"""The MLflow 3 UI opens an experiment on its runs (model training), not on the GenAI
overview, when the experiment is marked as such: new experiments and older ones."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlpipe.tracking import store

pytestmark = pytest.mark.integration
KIND = "custom_model_development"  # the MLflow UI's value for model training


@pytest.fixture
def user_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(store, "_exported_uri", None)
    monkeypatch.setattr(store, "_user_override", None)
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_new_and_older_experiments_are_marked_as_model_training(user_store: str) -> None:
    client = MlflowClient(tracking_uri=user_store)
    new_id = store.setup("fresh")
    assert client.get_experiment(new_id).tags[store.EXPERIMENT_KIND_TAG] == KIND
    older_id = client.create_experiment("older")  # as an earlier mlpipe made it: no kind
    assert store.EXPERIMENT_KIND_TAG not in client.get_experiment(older_id).tags
    assert store.setup("older") == older_id
    assert client.get_experiment(older_id).tags[store.EXPERIMENT_KIND_TAG] == KIND
