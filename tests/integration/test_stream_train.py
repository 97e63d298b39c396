"""The real train stage with train.in_memory=false: the splits stream from their shards
(a YAML `false`, as `dvc exp run -S train.in_memory=false` writes it), the MLflow run and
the outputs are those of an in-memory run; a changed shard stops it naming the shard."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.integration.test_resume import PARAMS, run_stage, stage_cmd, write_dataset

pytestmark = pytest.mark.integration


def streaming_params(root: Path) -> Path:
    params = copy.deepcopy(PARAMS)
    params["train"].update(epochs=2, in_memory=False, shuffle_buffer=256, loader_workers=1)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_train_stage_streams_end_to_end(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    write_dataset(tmp_path / "data", n_train=600, n_val=100)
    proc = run_stage(stage_cmd(tmp_path, streaming_params(tmp_path)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "streamed from shards (train.in_memory=false" in proc.stderr
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["epochs"] == 2 and report["val_accuracy"] > 0.5
    assert (tmp_path / "models" / "model.pt").is_file()
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(report["run_id"])
    assert run.data.params["train.in_memory"] == "false"
    assert run.data.metrics["calibration/temperature"] > 0  # fitted on the streamed val split


def test_a_changed_shard_stops_the_streaming_stage_naming_it(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", n_train=300, n_val=50)
    shard = sorted((tmp_path / "data").glob("train-*.npy"))[0]
    pixels = np.load(shard)
    pixels[0, 0, 0, 0] ^= 1
    np.save(shard, pixels)
    proc = run_stage(stage_cmd(tmp_path, streaming_params(tmp_path)), tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: error:")]
    assert len(lines) == 1 and str(shard) in lines[0], proc.stderr[-2000:]
    assert "does not match its index" in lines[0]
    assert not (tmp_path / "models" / "model.pt").exists()
    assert not (tmp_path / "mlflow.db").exists()  # stopped before MLflow was touched
