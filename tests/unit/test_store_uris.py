"""Store URIs: passwords never shown, SQLite files locked, artifacts anchored."""

from __future__ import annotations

import logging

import pytest

from mlpipe.errors import redact
from mlpipe.runner import RedactingFormatter, error_line
from mlpipe.tracking.store import artifact_location, sqlite_path


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cret@host:5000/api", "http://alice:***@host:5000/api"),
        ("postgresql+psycopg2://u:p%40ss@db/mlflow x", "postgresql+psycopg2://u:***@db/mlflow x"),
        ("a https://:tok@h b s3://k:v@bucket", "a https://:***@h b s3://k:***@bucket"),
        ("http://host:5000/no/user", "http://host:5000/no/user"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("user@example.com at http://u@h", "user@example.com at http://u@h"),
    ],
)
def test_redact_hides_passwords_only(text, shown):
    assert redact(text) == shown


def test_error_line_and_log_lines_are_redacted():
    assert error_line("train", ValueError("store http://a:b@h down")) == (
        "train: error: store http://a:***@h down"
    )
    record = logging.LogRecord("x", logging.INFO, "f", 1, "to %s", ("http://a:pw@h",), None)
    assert "pw" not in RedactingFormatter("%(message)s").format(record)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:////abs/mlflow.db", "/abs/mlflow.db"),
        ("sqlite:///rel/mlflow.db", "rel/mlflow.db"),
        ("sqlite:///:memory:", None),
        ("http://h:5000", None),
        ("postgresql://u:p@h/db", None),
    ],
)
def test_only_sqlite_files_get_a_file_lock(uri, path):
    found = sqlite_path(uri)
    assert (None if found is None else str(found)) == path


def test_artifacts_are_anchored_outside_dvc_temporary_copies(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo/.dvc/tmp/exps/tmpabc"))
    db = tmp_path / "elsewhere/mlflow.db"
    assert artifact_location(f"sqlite:///{db}") == (db.parent / "mlartifacts").as_uri()
    repo = (tmp_path / "repo/mlartifacts").as_uri()
    assert artifact_location("postgresql://u:p@h/db") == repo
    assert artifact_location("http://mlflow:5000") is None  # the server decides
