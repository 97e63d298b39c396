"""Issue 12: the tracking server goes away mid-training. The trained model is not lost: the
stage trains on, then fails with one line, keeping models/model.pt and the resume file.
With the server back (same store), a rerun logs the run and the model without retraining.

A real `mlflow server` on a SQLite store, in its own process group, killed (SIGKILL to the
group) after epoch 1. "Back" is a second server on the same store and artifacts, on another
port (the run lives in the store, not in the server), started early to save the test a
server start (~15 s on 2 cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from tests.integration.test_resume import PARAMS, REPO, env, stage_cmd, write_dataset

from mlpipe.stack.core import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 6


def start_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", (root / "artifacts").as_uri()]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = (root / "server.log").open("ab")
    return subprocess.Popen(
        cmd, cwd=root, env=environ, stdout=log, stderr=log, start_new_session=True
    )


def wait_healthy(root: Path, proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("mlflow server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers: gone, not closed
        proc.wait()


def test_server_lost_mid_training_keeps_the_model_and_a_rerun_logs_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    params = tmp_path / "params.yaml"
    train = PARAMS["train"] | {"epochs": EPOCHS, "batch_size": 16}
    params.write_text(yaml.safe_dump(PARAMS | {"train": train}))
    write_dataset(tmp_path / "data", n_train=1200, n_val=100, size=16)
    port, back_port = free_port(), free_port()
    uri = f"http://127.0.0.1:{port}"
    environ = env(tmp_path) | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    models = tmp_path / "models"
    server = start_server(tmp_path, port)
    back = None
    try:
        wait_healthy(tmp_path, server, port)
        back = start_server(tmp_path, back_port)  # comes up while the stage runs
        proc = subprocess.Popen(
            stage_cmd(tmp_path, params), cwd=REPO, env=environ, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while not (models / "resume.pt").exists() and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.02)
        stop_server(server)  # after epoch 1 was logged and saved
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 1, stderr[-3000:]
        lines = [ln for ln in stderr.splitlines() if ln.startswith("train: error:")]
        assert len(lines) == 1, stderr[-3000:]
        assert f"tracking store {uri} failed" in lines[0]
        assert f"kept in {models}/model.pt" in lines[0] and "without retraining" in lines[0]
        kept = torch.load(models / "model.pt", weights_only=True)["state_dict"]
        payload = torch.load(models / "resume.pt", weights_only=True)
        assert payload["complete"] is False and payload["state"]["epoch"] == EPOCHS
        unlogged = payload["extra"]["unlogged_from_epoch"]
        assert 2 <= unlogged <= EPOCHS  # the server was killed after epoch 1
        assert not (tmp_path / "train.json").exists()  # no report of an unlogged run

        wait_healthy(tmp_path, back, back_port)  # the store is back
        uri = f"http://127.0.0.1:{back_port}"
        again = subprocess.run(
            stage_cmd(tmp_path, params), cwd=REPO, env=environ | {"MLFLOW_TRACKING_URI": uri},
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        report = yaml.safe_load((tmp_path / "train.json").read_text())
        assert report["resumed_from_epoch"] == report["epochs"] == EPOCHS  # nothing retrained
        assert report["run_id"] == payload["extra"]["mlflow_run_id"]  # the same run
        resumed = torch.load(models / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(kept[k], resumed[k]) for k in kept)
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(report["run_id"])
        assert run.info.status == "FINISHED"
        epochs = sorted(m.value for m in client.get_metric_history(run.info.run_id, "epoch"))
        assert epochs == list(range(1, EPOCHS + 1))  # each epoch once, before or after
        assert "calibration/temperature" in run.data.metrics
        assert report["model_uri"] and client.get_logged_model(report["model_uri"].split("/")[-1])
    finally:
        for proc in (server, back):
            if proc is not None:
                stop_server(proc)
