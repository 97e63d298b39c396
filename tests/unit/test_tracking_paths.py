"""Where the MLflow store lives: pure path and environment logic, no MLflow calls."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest

from mlpipe.config import flatten
from mlpipe.tracking import store as tracking
from mlpipe.tracking.store import project_root, tracking_uri
from mlpipe.train.config import Schedule


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "_exported_uri", None)
    monkeypatch.setattr(tracking, "_user_override", None)


def test_dvc_root_is_the_root(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo")
    assert project_root() == Path("/x/repo")


def test_dvc_experiment_copy_maps_to_the_real_repo(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo/.dvc/tmp/exps/tmpabc123")
    assert project_root() == Path("/x/repo")
    assert tracking_uri() == "sqlite:////x/repo/mlflow.db"


def test_experiment_copy_found_from_a_subfolder(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo/.dvc/tmp/exps/tmpabc123/sub/dir")
    assert project_root() == Path("/x/repo")


def test_similar_names_are_not_an_experiment_copy(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo/dvc/tmp/exps/tmpabc123")
    assert project_root() == Path("/x/repo/dvc/tmp/exps/tmpabc123")


def test_without_dvc_root_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_without_dvc_root_an_experiment_cwd_maps_back(monkeypatch, tmp_path):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpxyz"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert project_root() == (tmp_path / "repo").resolve()


def test_explicit_start_used_without_dvc_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert project_root(Path("/elsewhere/repo")) == Path("/elsewhere/repo")
    assert tracking_uri(Path("/elsewhere/repo")) == "sqlite:////elsewhere/repo/mlflow.db"


def test_dvc_root_wins_over_start(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo")
    assert project_root(Path("/elsewhere")) == Path("/x/repo")


def test_user_tracking_uri_wins(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri() == "http://mlflow.example:5000"


def test_uri_we_exported_is_not_mistaken_for_the_users(monkeypatch):
    monkeypatch.setenv("DVC_ROOT", "/x/repo")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////old/place/mlflow.db")
    monkeypatch.setattr(tracking, "_exported_uri", "sqlite:////old/place/mlflow.db")
    assert tracking_uri() == "sqlite:////x/repo/mlflow.db"


class Color(str, Enum):
    red = "red"


def test_flatten_nested_enums_and_lists():
    tree = {
        "train": {"lr": 0.003, "schedule": Schedule.cosine, "grad_clip": None},
        "model": {"channels": [32, 64], "inner": {"color": Color.red}},
        "top": 1,
    }
    assert flatten(tree) == {
        "train.lr": "0.003",
        "train.schedule": "cosine",
        "train.grad_clip": "None",
        "model.channels": "[32, 64]",
        "model.inner.color": "red",
        "top": "1",
    }


def test_flatten_prefix_and_empty():
    assert flatten({"a": {"b": True}}, prefix="p.") == {"p.a.b": "True"}
    assert flatten({}) == {}
    assert flatten({"a": {}}) == {}
