"""The registry commands and stages stay on the store the user chose."""

from __future__ import annotations

import mlflow
import pytest

from mlpipe.tracking import store as tracking


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # so monkeypatch restores it afterwards
    monkeypatch.setattr(tracking, "_exported_uri", None)
    monkeypatch.setattr(tracking, "_user_override", None)
    monkeypatch.setattr(tracking, "ensure_store", lambda uri: None)  # paths only: no files
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # forget what connect() set


def test_users_uri_survives_being_exported(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere/mlflow.db")
    tracking.connect()  # exports the same value back into the environment
    assert tracking.tracking_uri() == "sqlite:////tmp/elsewhere/mlflow.db"
    tracking.connect()
    assert tracking.tracking_uri() == "sqlite:////tmp/elsewhere/mlflow.db"


def test_default_store_we_exported_stays_the_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.connect()
    assert tracking.tracking_uri() == "sqlite:////x/repo/mlflow.db"
    monkeypatch.setenv("DVC_ROOT", "/y/other")  # a later stage elsewhere: not pinned to /x
    assert tracking.tracking_uri() == "sqlite:////y/other/mlflow.db"


def test_a_later_user_override_wins(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.connect()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri() == "http://mlflow.example:5000"


def test_one_client_per_store_per_process(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a.db'}")
    first = tracking.client()
    assert tracking.client() is first  # not a new MlflowClient for every call
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'b.db'}")
    assert tracking.client() is not first


def test_connect_turns_mlflows_download_bars_off_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    tracking.connect()
    assert tracking.os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    tracking.connect()
    assert tracking.os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
