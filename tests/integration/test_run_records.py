"""MLflow-native records of the train run: system metrics and DVC-hashed dataset inputs,
on a real SQLite store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mlpipe.tracking import inputs, runs
from mlpipe.tracking import store as tracking_store


@pytest.fixture()
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setattr(tracking_store, "_exported_uri", None)
    monkeypatch.setattr(tracking_store, "_user_override", None)
    yield uri
    import mlflow

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_dir_hash_is_dvcs(tmp_path: Path) -> None:
    folder = tmp_path / "processed"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.npz").write_bytes(b"\x00\x01binary")
    (folder / "sub" / "meta.json").write_text('{"x": 1}\r\n')
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "add", "-q", "processed"], cwd=tmp_path, check=True)
    added = yaml.safe_load((tmp_path / "processed.dvc").read_text())["outs"][0]["md5"]
    ours, files = inputs.dvc_dir_md5(folder)
    assert ours == added
    assert set(files) == {"a.npz", "sub/meta.json"}


def test_train_run_gets_system_metrics_and_dataset_inputs(sqlite_store, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "data"
    folder.mkdir()
    splits = {}
    for split, n in (("train", 6), ("test", 3)):
        images = np.full((n, 1, 4, 4), n, np.uint8)
        labels = np.arange(n) % 2
        np.savez(folder / f"{split}.index.npz", images=images, labels=labels)
        splits[split] = SimpleNamespace(images=images, labels=labels)
    with runs.start_run("records", "r", {}, system_metrics=True) as run_id:
        dir_md5 = inputs.log_split_inputs(folder, splits, "toy")
        deadline = time.monotonic() + 30  # until the sampler has logged once
        client = MlflowClient(sqlite_store)
        while time.monotonic() < deadline and not any(
            k.startswith("system/") for k in client.get_run(run_id).data.metrics
        ):
            time.sleep(0.2)
    run = client.get_run(run_id)
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    logged = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d
        for d in run.inputs.dataset_inputs
    }
    assert set(logged) == {"train", "test"}
    _, files = inputs.dvc_dir_md5(folder)
    for split, d in logged.items():
        assert d.dataset.digest == files[f"{split}.index.npz"] and d.dataset.name == f"toy-{split}"
        assert {t.key: t.value for t in d.tags}["dvc_md5"] == dir_md5
