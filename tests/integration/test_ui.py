"""`mlpipe ui`: the URL of the experiment's runs in model-training mode, and a lean
`mlflow ui` (one worker, no job runner) that it leaves behind no process of."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlpipe.cli import ui_url

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def test_ui_url_points_at_the_runs_in_model_training_mode():
    assert ui_url("127.0.0.1", 5000, "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert ui_url("127.0.0.1", 5000, None) == "http://127.0.0.1:5000"  # nothing logged yet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_pids(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_mlpipe_ui_serves_the_store_with_few_processes(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    params = tmp_path / "params.yaml"
    params.write_text("tracking:\n  experiment: ui-test\n")
    setup = "from mlpipe.tracking import store; print(store.setup('ui-test'))"
    exp_id = subprocess.run(
        [sys.executable, "-c", setup], env=env, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    port = free_port()
    err = tmp_path / "ui.err"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "mlpipe"), "ui", "--port", str(port), "--params", str(params)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, err.read_text()[-2000:]
                assert time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.5)
        first = err.read_text().splitlines()[0]
        assert first == f"MLflow UI for experiment 'ui-test': {ui_url('127.0.0.1', port, exp_id)}"
        assert len(group_pids(proc.pid)) <= 3, group_pids(proc.pid)  # was 16 with defaults
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while group_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = group_pids(proc.pid)
        if leftover:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not leftover


def test_a_server_uri_is_refused_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://bob:secret@127.0.0.1:9"}
    proc = subprocess.run(
        [str(BIN / "mlpipe"), "ui"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "mlpipe ui: error: MLFLOW_TRACKING_URI=http://bob:***@127.0.0.1:9: not a local SQLite "
        "store; open that server's own UI (mlpipe ui serves the project's mlflow.db)"
    ]
