"""Kill the real train stage with SIGKILL mid-run, run it again: it resumes from
models/resume.pt and ends with exactly the metrics and weights of an uninterrupted run, on
the same MLflow run. Bad resume files stop the stage with one line naming the file.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from mlpipe.dataset import ImageDataset, ImageSplit, save_dataset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
PARAMS = {
    "model": {"arch": "cnn", "channels": [8, 16], "pool_size": 4, "hidden": 32, "dropout": 0.2},
    "train": {
        "epochs": EPOCHS,
        "batch_size": 32,
        "lr": 0.003,
        "seed": 3,
        "label_smoothing": 0.1,
        "augment": {"crop_padding": 2, "hflip": True},
        "ema_decay": 0.99,
    },
    "runtime": {
        "device": "cpu",
        "precision": "fp32",
        "num_threads": 1,  # the same in every run: bit-identical results need it
        "deterministic": True,
    },
    "tracking": {"experiment": "resume-test"},
}
TIMING_COLUMNS = {"seconds", "images_per_second"}


def write_dataset(folder: Path, n_train: int = 3000, n_val: int = 400, size: int = 16) -> None:
    """Four noisy brightness classes: learnable, but not perfectly."""
    rng = np.random.default_rng(0)

    def split(n: int) -> ImageSplit:
        labels = rng.integers(0, 4, n)
        base = (labels * 50 + 40)[:, None, None, None]
        noise = rng.normal(0, 45, (n, 1, size, size))
        return ImageSplit(np.clip(base + noise, 0, 255).astype(np.uint8), labels.astype(np.int64))

    splits = {"train": split(n_train), "val": split(n_val), "test": split(100)}
    norm = {"normalization": {"mean": [0.45], "std": [0.25]}}
    save_dataset(ImageDataset(splits, ["a", "b", "c", "d"], "synthetic", norm), folder)


def stage_cmd(work: Path, params: Path, resume_file: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipelines.train", "--params", str(params)]
    cmd += ["--data", str(work / "data"), "--model-dir", str(work / "models")]
    cmd += ["--report", str(work / "train.json"), "--curves", str(work / "curves.csv")]
    return cmd + (["--resume-file", str(resume_file)] if resume_file else [])


def env(root: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    out.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        OMP_NUM_THREADS="1",
    )
    return out


def run_stage(cmd: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env(root), capture_output=True, text=True, timeout=300)


def curves(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def load_resume(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    whole, killed = root / "whole", root / "killed"
    for work in (whole, killed):
        write_dataset(work / "data")

    done = run_stage(stage_cmd(whole, params), root)
    assert done.returncode == 0, done.stderr[-3000:]

    resume_file = killed / "models" / "resume.pt"
    proc = subprocess.Popen(
        stage_cmd(killed, params), cwd=REPO, env=env(root), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not resume_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # after the first epoch's checkpoint: mid epoch 2
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-run:\n{stderr[-3000:]}"
    shutil.copy(resume_file, root / "killed-resume.pt")  # as the kill left it
    model_after_kill = (killed / "models" / "model.pt").exists()

    resumed = run_stage(stage_cmd(killed, params), root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "root": root,
        "params": params,
        "whole": whole,
        "killed": killed,
        "model_after_kill": model_after_kill,
    }


def test_kill_left_an_unfinished_checkpoint_and_no_model(runs):
    assert runs["model_after_kill"] is False
    payload = load_resume(runs["root"] / "killed-resume.pt")
    assert payload["complete"] is False
    assert 1 <= payload["state"]["epoch"] < EPOCHS
    assert payload["extra"]["mlflow_run_id"]


def test_resumed_run_matches_uninterrupted_run_exactly(runs):
    report = yaml.safe_load((runs["killed"] / "train.json").read_text())
    assert report["resumed_from_epoch"] >= 1
    assert report["epochs"] == EPOCHS
    assert curves(runs["killed"] / "curves.csv") == curves(runs["whole"] / "curves.csv")
    whole = torch.load(runs["whole"] / "models/model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(runs["killed"] / "models/model.pt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name


def test_resumed_run_continues_the_same_mlflow_run(runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs['root'] / 'mlflow.db'}")
    killed_run = load_resume(runs["root"] / "killed-resume.pt")["extra"]["mlflow_run_id"]
    report = yaml.safe_load((runs["killed"] / "train.json").read_text())
    assert report["run_id"] == killed_run
    run = client.get_run(killed_run)
    assert run.info.status == "FINISHED"
    epochs = sorted(m.value for m in client.get_metric_history(killed_run, "epoch"))
    assert epochs == list(range(1, EPOCHS + 1))  # each epoch logged once, kill or not
    assert len({m.step for m in client.get_metric_history(killed_run, "val/accuracy")}) == EPOCHS
    assert len(client.search_runs([run.info.experiment_id])) == 2  # whole + killed/resumed


def test_finished_run_leaves_a_complete_marker_and_no_temporary_files(runs):
    payload = load_resume(runs["killed"] / "models" / "resume.pt")
    assert payload["complete"] is True and "state" not in payload
    # the run id's one home is now train.json: the marker does not keep a second copy
    assert "mlflow_run_id" not in payload["extra"]
    assert "run_id" not in repr(payload.get("summary", {}))
    assert sorted(p.name for p in (runs["killed"] / "models").iterdir()) == [
        "model.pt",
        "resume.pt",
    ]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "unreadable resume checkpoint"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "unreadable resume checkpoint"),
    ],
    ids=["truncated", "garbage"],
)
def test_corrupt_resume_file_stops_the_stage_naming_it(runs, tmp_path, damage, message):
    bad = tmp_path / "resume.pt"
    shutil.copy(runs["root"] / "killed-resume.pt", bad)
    damage(bad)
    proc = run_stage(stage_cmd(runs["killed"], runs["params"], bad), tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: error:")]
    assert lines == [lines[0]] and str(bad) in lines[0] and message in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # stopped before MLflow was touched


def test_resume_file_of_other_params_stops_the_stage_naming_the_change(runs, tmp_path):
    other = tmp_path / "resume.pt"
    shutil.copy(runs["root"] / "killed-resume.pt", other)
    params = tmp_path / "params.yaml"
    changed = PARAMS | {"train": PARAMS["train"] | {"lr": 0.01}}
    params.write_text(yaml.safe_dump(changed))
    proc = run_stage(stage_cmd(runs["killed"], params, other), tmp_path)
    assert proc.returncode == 1
    assert f"train: error: {other}: written by a different run (train.lr: 0.003 -> 0.01)" in (
        proc.stderr
    )
