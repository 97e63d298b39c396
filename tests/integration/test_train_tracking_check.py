"""The train stage checks the tracking server before training (issue 12): an unreachable
server stops it at once with one line, and the resume file of an earlier run is kept."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.integration.test_resume import PARAMS, REPO, env, stage_cmd, write_dataset

pytestmark = pytest.mark.integration


def test_unreachable_server_stops_train_before_training(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    write_dataset(tmp_path / "data", n_train=64, n_val=32, size=8)
    uri = f"http://user:pw@127.0.0.1:{port}"
    proc = subprocess.run(
        stage_cmd(tmp_path, params),
        cwd=REPO,
        env={**env(tmp_path), "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert f"user:***@127.0.0.1:{port}" in lines[0] and "unreachable" in lines[0]
    assert "pw@" not in proc.stderr
    assert not (tmp_path / "models" / "model.pt").exists()
    assert not (tmp_path / "curves.csv").exists()
