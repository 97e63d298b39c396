"""Issue 12: the real team stack on loopback (PostgreSQL as an unprivileged user, moto_server as
the S3 stand-in, `mlflow server` with proxied S3 artifacts). The unchanged smoke pipeline runs
against it; the run, the registered version and its alias are checked through the server's REST
API; `dvc push` / `dvc pull` and `dvc exp push` / `dvc exp pull` (git remote: a bare repository)
round-trip into a second clone; teardown leaves no process. The server runs with basic auth
(AUTH=1): anonymous requests get 401, the pipeline and the checks log in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_pipeline_e2e import copy_repo, run

from mlpipe.stack import core as stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _skip_reason() -> str | None:
    if stack.pg_bin() is None:
        return "PostgreSQL is not installed (make postgres-deps)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started"
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as exc:
        return f"the .[team] extra is not installed ({exc.name}): make setup-team"
    return None


ADMIN, PASSWORD = "admin", "team-stack-test-pw"
LOGIN = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


def rest(uri: str, path: str, login: bool = True) -> Any:
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}")
    if login:
        token = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_team_stack_pipeline_registry_and_dvc_remote(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    repo = copy_repo(tmp_path_factory.mktemp("team"))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)  # AUTH=1 make stack-up
    state = stack.up(repo, fast=True, auth=True)
    try:
        uri = state["tracking_uri"]
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            rest(uri, "experiments/search?max_results=1", login=False)
        assert anonymous.value.code == 401
        assert rest(uri, "experiments/search?max_results=1")["experiments"]  # logged in: 200
        env_lines = (repo / ".stack" / "env").read_text()
        assert f"export MLFLOW_TRACKING_URI={uri}" in env_lines
        tune_storage = next(
            line.split("=", 1)[1] for line in env_lines.splitlines()
            if line.startswith("export MLPIPE_TUNE_STORAGE=")
        )  # fmt: skip
        import optuna  # the studies' database answers: `mlpipe tune` can use it as it is

        optuna.create_study(storage=tune_storage, study_name="probe")
        assert optuna.get_all_study_names(tune_storage) == ["probe"]
        local = (repo / ".dvc" / "config.local").read_text()
        assert 'remote "team"' in local and "secret_access_key" in local
        assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()

        server = {"MLFLOW_TRACKING_URI": uri} | LOGIN
        run(
            ["dvc", "exp", "run", "--name", "team", "-S", "data=digits", "-S", "train=smoke"],
            repo,
            extra_env=server,
        )

        run_id = json.loads((repo / "reports/train.json").read_text())["run_id"]
        got = rest(uri, f"runs/get?run_id={run_id}")["run"]
        assert got["info"]["status"] == "FINISHED"
        assert any(m["key"] == "test/accuracy" for m in got["data"]["metrics"])
        model = rest(uri, "registered-models/get?name=digits-classifier")["registered_model"]
        assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1"}
        version = rest(uri, "registered-models/alias?name=digits-classifier&alias=champion")
        assert version["model_version"]["run_id"] == run_id
        # artifacts went through the server into the bucket, not onto this disk
        arts = rest(uri, f"artifacts/list?run_id={run_id}&path=evaluate")
        assert any(f["path"].endswith("confusion_matrix.png") for f in arts.get("files", []))
        assert not (repo / "mlartifacts").exists() and not (repo / "mlflow.db").exists()

        # dvc push to the team remote, pull into a second clone
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "trained"], repo)
        run(["dvc", "push", "-r", "team"], repo)
        clone = tmp_path_factory.mktemp("clone") / "repo"
        run(["git", "clone", "-q", str(repo), str(clone)], repo)
        shutil.copy2(repo / ".dvc" / "config.local", clone / ".dvc" / "config.local")
        run(["dvc", "pull", "-r", "team"], clone)
        assert sha(clone / "models/model.pt") == sha(repo / "models/model.pt")
        # the manifest stage is `always_changed`; every other stage is up to date
        status = run(["dvc", "status"], clone).stdout.split()
        assert status == ["manifest:", "always", "changed"], status

        # the experiment itself: dvc exp push to a shared git remote (a bare repository) and
        # the team remote; dvc exp pull into a fresh clone at the baseline (empty cache)
        shared = tmp_path_factory.mktemp("git") / "shared.git"
        run(["git", "init", "-q", "--bare", str(shared)], repo)
        run(["git", "remote", "add", "shared", str(shared)], repo)
        run(["dvc", "exp", "push", "-r", "team", "shared", "team"], repo)
        other = tmp_path_factory.mktemp("other") / "repo"
        run(["git", "clone", "-q", str(repo), str(other)], repo)
        run(["git", "checkout", "-q", "HEAD~1"], other)  # the experiment's baseline
        run(["git", "remote", "add", "shared", str(shared)], other)
        shutil.copy2(repo / ".dvc" / "config.local", other / ".dvc" / "config.local")
        run(["dvc", "exp", "pull", "-r", "team", "shared", "team"], other)
        assert "team" in run(["dvc", "exp", "list", "--name-only"], other).stdout.split()
        run(["dvc", "exp", "apply", "team"], other)
        assert sha(other / "models/model.pt") == sha(repo / "models/model.pt")
    finally:
        procs = json.loads((repo / ".stack" / "state.json").read_text())["procs"]
        stack.down(repo)
    # nothing left: every process group gone, no port listening, config.local usable
    assert not [n for n, p in procs.items() if alive(int(p["pgid"]))]
    assert not [n for n, p in procs.items() if stack.listening(int(p["port"]))]
    assert not (repo / ".stack" / "state.json").exists()
    assert run(["dvc", "remote", "list"], repo).returncode == 0


def test_stack_up_without_postgres_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "pg_bin", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert stack.main(["up"]) == 1
    assert not (tmp_path / ".stack" / "state.json").exists()


def test_down_drops_the_remote_section_only(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config.local").write_text(
        "[core]\n    remote = mine\n['remote \"team\"']\n    url = s3://b/dvc\n"
        "    secret_access_key = x\n['remote \"mine\"']\n    url = /tmp/x\n"
    )
    stack._drop_remote(tmp_path)
    text = (tmp_path / ".dvc" / "config.local").read_text()
    assert "team" not in text and "secret_access_key" not in text
    assert 'remote "mine"' in text and "remote = mine" in text
