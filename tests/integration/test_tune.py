"""`mlpipe tune` for real: Optuna (SQLite storage with heartbeats), two worker processes,
MLflow child runs, a worker killed mid-search, then `tune apply` and the real pipeline
(`dvc exp run`) reproducing the best trial's validation accuracy. Tiny digits data."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.test_pipeline_e2e import copy_repo, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPACE = {
    "objective": "val_accuracy",
    "trials": 6,
    "sampler": "random",  # seeded per worker: both regions get drawn
    "seed": 3,
    "pruner": "median",
    "startup_trials": 2,
    "warmup_epochs": 1,
    "heartbeat_s": 1,
    "grace_s": 3,
    "fixed": ["train=smoke", "runtime=cpu"],
    # below about 1e-4 the CNN barely moves in an epoch: the bad region the pruner stops
    "space": {
        "train.lr": {"type": "float", "low": 0.000001, "high": 0.01, "log": True},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.4},
    },
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = copy_repo(tmp_path_factory.mktemp("tune"))
    run(["dvc", "exp", "run", "-S", "data=digits", "preprocess"], repo)  # the trials' data
    (repo / "conf" / "tune" / "tiny.yaml").write_text(yaml.safe_dump(SPACE))
    storage = f"sqlite:///{repo / 'optuna.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PYTHONPATH"] = f"{repo / 'src'}{os.pathsep}{repo}"
    cmd = [sys.executable, "-m", "mlpipe.cli", "tune", "start", "--space", "tiny"]
    cmd += ["--workers", "2", "--study", "s1"]
    log = repo / "tune.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        killed = kill_worker_after_first_trial(repo, storage, proc)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return {"repo": repo, "storage": storage, "env": env, "killed": killed, "log": log}


def kill_worker_after_first_trial(repo: Path, storage: str, proc: Any) -> bool:
    """SIGKILL worker 1 once a trial has finished (it is then in the middle of one)."""
    import optuna

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name="s1", storage=storage).trials
        except KeyError:
            trials = []
        if any(t.state.is_finished() for t in trials):
            break
        time.sleep(0.2)
    found = subprocess.run(
        ["pgrep", "-f", "tune worker --study s1 --storage .* --index 1"],
        capture_output=True, text=True,
    )  # fmt: skip
    pids = [int(p) for p in found.stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return bool(pids)


def test_the_search_finishes_despite_a_killed_worker(searched: dict[str, Any]) -> None:
    import optuna
    from optuna.trial import TrialState

    assert searched["killed"], "worker 1 was not found to kill"
    study = optuna.load_study(study_name="s1", storage=searched["storage"])
    states = [t.state for t in study.trials]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) >= 6
    assert TrialState.RUNNING not in states  # the killed worker's trial was failed
    assert states.count(TrialState.FAIL) <= 1
    assert TrialState.PRUNED in states, [(t.params, t.state) for t in study.trials]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) == 1 for t in pruned)  # stopped after epoch 1


def test_each_trial_is_a_child_run_and_nothing_is_registered(searched: dict[str, Any]) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{searched['repo'] / 'mlflow.db'}")
    study = optuna.load_study(study_name="s1", storage=searched["storage"])
    parent_id = study.user_attrs["mlpipe.mlflow_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tune-s1"
    plots = {a.path for a in client.list_artifacts(parent_id, "tune")}
    assert "tune/optimization_history.png" in plots
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == len(study.trials)
    by_trial = {int(r.data.tags["mlpipe.trial"]): r for r in children}
    for trial in study.trials:
        run_ = by_trial[trial.number]
        assert run_.data.tags["mlpipe.trial_state"] == (
            "FAIL" if trial.state.name == "FAIL" else trial.state.name
        )
        if trial.state.name != "FAIL":
            assert float(run_.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
            assert len(client.get_metric_history(run_.info.run_id, "val/accuracy")) == len(
                trial.intermediate_values
            )
    assert not client.search_registered_models()  # trials never register or move aliases


def test_show_then_apply_and_the_pipeline_reproduces_the_best_trial(
    searched: dict[str, Any],
) -> None:
    import optuna

    repo, env = searched["repo"], searched["env"]
    shown = subprocess.run(
        [sys.executable, "-m", "mlpipe.cli", "tune", "show", "--study", "s1"],
        cwd=repo, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    best = optuna.load_study(study_name="s1", storage=searched["storage"]).best_trial
    assert f"{best.value:.4f}" in shown.stdout.splitlines()[2]  # the first row is the best
    subprocess.run(
        [sys.executable, "-m", "mlpipe.cli", "tune", "apply", "--study", "s1"],
        cwd=repo, env=env, check=True, capture_output=True,
    )  # fmt: skip
    assert (repo / "conf/experiment/tuned.yaml").is_file()
    # the pipeline up to the train stage: what the trial's number depends on
    run(["dvc", "exp", "run", "-S", "data=digits", "-S", "experiment=tuned", "train"], repo)
    with (repo / "reports/plots/training_curves.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["val_accuracy"]) == pytest.approx(best.value, abs=1e-9)


def test_bad_input_is_one_line_before_any_trial(
    searched: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlpipe.cli import main

    repo = searched["repo"]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLPIPE_TUNE_STORAGE", searched["storage"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(SPACE | {"objective": "test_accuracy"}))
    cases = [
        (["start", "--space", str(bad)], f"mlpipe tune start: error: {bad}: objective: "),
        (["start", "--space", "nope"], "mlpipe tune start: error: "),
        (["worker", "--study", "missing"], "mlpipe tune worker: error: no study 'missing' in "),
        (["apply", "--study", "s1", "--name", "../x"], "mlpipe tune apply: error: --name: "),
    ]
    for args, line in cases:
        capsys.readouterr()
        assert main(["tune", *args, "--root", str(repo)]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith(line) and err.count("\n") == 1, err


def test_the_same_search_with_the_study_in_postgresql(searched: dict[str, Any]) -> None:
    """A team's storage: the study in PostgreSQL, two worker processes, one MLflow store."""
    import optuna
    from optuna.trial import TrialState
    from tests.integration.postgres import missing, postgres

    why = missing()
    if why is not None:
        pytest.skip(f"no PostgreSQL: {why}")
    repo, env = searched["repo"], searched["env"]
    with postgres("optuna") as url:
        cmd = [sys.executable, "-m", "mlpipe.cli", "tune", "start", "--space", "tiny"]
        cmd += ["--workers", "2", "--trials", "4", "--study", "pg"]
        out = subprocess.run(
            cmd, cwd=repo, env=env | {"MLPIPE_TUNE_STORAGE": url},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        study = optuna.load_study(study_name="pg", storage=url)
        states = [t.state for t in study.trials]
        assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) >= 4
        assert TrialState.RUNNING not in states
        assert study.user_attrs["mlpipe.mlflow_run_id"]
        assert "study pg:" in out.stdout
    assert not (repo / "optuna.db").exists() or "pg" not in optuna.get_all_study_names(
        searched["storage"]
    )  # the environment's storage was used, not the local file
