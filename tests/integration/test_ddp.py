"""DistributedDataParallel on 2 CPU processes (gloo), launched by torchrun, against one process.

What is compared:
- A model without BatchNorm or dropout (an MLP), with augmentation on and a global batch
  (31) that does not split evenly between the ranks: DDP must train on exactly the same
  global batches with the same augmentation and the same gradient (the mean over the whole
  batch), so the final weights and every epoch's metrics equal the single-process run's up
  to float summation order (weights allclose, atol 1e-5; losses rel 1e-4; accuracies equal).
- The CNN with BatchNorm and dropout: each rank normalises its own half-batch ("ghost"
  BatchNorm of 16; SyncBatchNorm needs CUDA) and draws its own dropout masks, so it follows
  another trajectory and only the outcome is comparable. On this tiny task (10 steps an
  epoch) that costs some val loss (0.21-0.34 over seeds 5-9, against 0.09-0.22 in one
  process), so: both reach val accuracy >= 0.85, within 0.1 of each other, and the DDP val
  loss falls to under half its first epoch's.
- The real train stage under torchrun: rank 0 alone logs one MLflow run and writes outputs.

Run as a script (by torchrun) this file is the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from mlpipe.models import build_model
from mlpipe.models.cnn import CNNConfig
from mlpipe.train import distributed
from mlpipe.train.config import AugmentConfig, DeviceChoice, Precision, TrainConfig
from mlpipe.train.device import Runtime, resolve_runtime, seed_everything
from mlpipe.train.engine import TensorData, fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SIZE = 8


def dataset(n: int, seed: int) -> TensorData:
    """Four noisy brightness classes, (n, 1, 8, 8) uint8."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    base = (labels * 50 + 40).view(n, 1, 1, 1)
    noise = torch.randn((n, 1, SIZE, SIZE), generator=g) * 40
    return TensorData((base + noise).clamp(0, 255).to(torch.uint8), labels)


TRAIN, VAL = dataset(310, seed=0), dataset(101, seed=1)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(SIZE * SIZE, 32), nn.ReLU(), nn.Linear(32, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 255.0)


def config(kind: str) -> TrainConfig:
    common = {
        "epochs": 5,
        "lr": 0.03,
        "seed": 5,
    }
    if kind == "mlp":
        return TrainConfig(batch_size=31, augment=AugmentConfig(1, True), **common)
    return TrainConfig(batch_size=32, **common)


def make_model(kind: str) -> nn.Module:
    seed_everything(0)
    if kind == "mlp":
        return MLP()
    return build_model(CNNConfig(channels=[8], pool_size=2, hidden=16), 1, 4, [0.45], [0.25])


def train(kind: str, runtime: Runtime) -> dict:
    model = make_model(kind)
    history = fit(model, TRAIN, VAL, config(kind), runtime)
    return {
        "rows": history.rows(),
        "state": {k: v.tolist() for k, v in model.state_dict().items()},
    }


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    runtime = resolve_runtime(DeviceChoice.cpu, Precision.fp32)  # joins the gloo group
    assert runtime.dist.world_size == 2
    try:
        results = {kind: train(kind, runtime) for kind in ("mlp", "cnn")}
        if runtime.dist.is_main:
            out.write_text(json.dumps(results))
    finally:
        distributed.shutdown()


def torchrun(*args: str, cwd: Path = REPO, extra_env: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    pythonpath = f"{REPO / 'src'}{os.pathsep}{REPO}"  # this checkout, not an installed one
    env.update({"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"} | (extra_env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ddp") / "ranks.json"
    proc = torchrun(__file__, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single_results() -> dict:
    torch.set_num_threads(1)
    runtime = Runtime(torch.device("cpu"), None)
    return {kind: train(kind, runtime) for kind in ("mlp", "cnn")}


def test_ddp_without_batchnorm_or_dropout_matches_one_process(ddp_results, single_results):
    ddp, single = ddp_results["mlp"], single_results["mlp"]
    for name, values in single["state"].items():
        torch.testing.assert_close(
            torch.tensor(ddp["state"][name]), torch.tensor(values), atol=1e-5, rtol=1e-4
        )
    assert len(ddp["rows"]) == len(single["rows"]) == 5
    for d, s in zip(ddp["rows"], single["rows"], strict=True):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
        assert d["val_loss"] == pytest.approx(s["val_loss"], rel=1e-4)
        assert d["train_accuracy"] == s["train_accuracy"]
        assert d["val_accuracy"] == s["val_accuracy"]
        assert d["lr"] == pytest.approx(s["lr"])
    assert ddp["rows"][-1]["val_accuracy"] > 0.6  # it learned something


def test_ddp_cnn_learns_like_one_process(ddp_results, single_results):
    ddp, single = ddp_results["cnn"]["rows"][-1], single_results["cnn"]["rows"][-1]
    assert single["val_accuracy"] >= 0.85 and ddp["val_accuracy"] >= 0.85
    assert ddp["val_accuracy"] == pytest.approx(single["val_accuracy"], abs=0.1)
    assert ddp["val_loss"] < ddp_results["cnn"]["rows"][0]["val_loss"] / 2
    assert ddp["train_loss"] < ddp_results["cnn"]["rows"][0]["train_loss"]


@pytest.mark.parametrize("in_memory", ["true", "false"])  # false: streamed from the shards
def test_train_stage_under_torchrun(tmp_path, in_memory):
    from mlflow.tracking import MlflowClient

    from mlpipe.dataset import ImageDataset, ImageSplit, save_dataset

    def split(data: TensorData) -> ImageSplit:
        return ImageSplit(data.images.numpy(), data.labels.numpy())

    splits = {"train": split(TRAIN), "val": split(VAL), "test": split(VAL)}
    norm = {"normalization": {"mean": [0.45], "std": [0.25]}}
    save_dataset(ImageDataset(splits, list("abcd"), "synthetic", norm), tmp_path / "data")
    params = {
        "model": {"arch": "cnn", "channels": [8], "pool_size": 2, "hidden": 16, "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 32, "in_memory": in_memory},
        "runtime": {"device": "cpu", "precision": "fp32"},
        "tracking": {"experiment": "ddp-test"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    db = tmp_path / "mlflow.db"
    proc = torchrun(
        "-m",
        "pipelines.train",
        "--params",
        str(tmp_path / "params.yaml"),
        "--data",
        str(tmp_path / "data"),
        "--model-dir",
        str(tmp_path / "models"),
        "--report",
        str(tmp_path / "train.json"),
        "--curves",
        str(tmp_path / "curves.csv"),
        extra_env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["epochs"] == 2 and report["val_accuracy"] > 0.5
    assert proc.stderr.count("streamed from shards") == (2 if in_memory == "false" else 0)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("ddp-test").experiment_id])
    assert [r.info.run_id for r in runs] == [report["run_id"]]  # one run, from rank 0
    assert len(client.get_metric_history(report["run_id"], "val/accuracy")) == 2
    assert proc.stderr.count("mlpipe.train: run ") == 1  # the closing line: rank 0 only
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt", "resume.pt"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    worker(parser.parse_args().out)
