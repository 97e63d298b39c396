"""The training loop on a tiny separable problem, runtime resolution, and checkpoints."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch._dynamo  # the first optimiser imports it (~2 s): pay that at collection
from torch import nn

from mlpipe.config import CNNConfig, DeviceChoice, Precision, TrainConfig
from mlpipe.errors import ConfigError, DataError
from mlpipe.models import build_model
from mlpipe.training.checkpoint import load_checkpoint, save_checkpoint
from mlpipe.training.device import Runtime, resolve_runtime, seed_everything
from mlpipe.training.engine import History, TensorData, TrainingDiverged, fit

MODEL_CFG = CNNConfig(channels=[4], pool_size=2, hidden=8, dropout=0.0)
MEAN, STD = [0.45], [0.3]
CLASS_NAMES = ["dark", "bright"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny ops: thread hand-offs cost more than the work, and much more on a busy CPU.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def separable(n: int, seed: int) -> TensorData:
    """(n, 1, 8, 8) uint8: class 1 bright (~200), class 0 dark (~30), with pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels == 1, 200, 30).view(n, 1, 1, 1)
    noise = torch.randint(-25, 26, (n, 1, 8, 8), generator=generator)
    return TensorData((base + noise).to(torch.uint8), labels.long())


TRAIN, VAL = separable(64, seed=0), separable(32, seed=1)


def train_cfg(**overrides) -> TrainConfig:
    values = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.03,
        "device": DeviceChoice.cpu,
        "precision": Precision.fp32,
        "seed": 0,
    }
    return TrainConfig(**(values | overrides))


CPU = Runtime(torch.device("cpu"), None)


def tiny_model(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return build_model(MODEL_CFG, 1, 2, MEAN, STD)


def train_tiny(seed: int = 0, **overrides) -> History:
    cfg = train_cfg(seed=seed, **overrides)
    return fit(tiny_model(seed), TRAIN, VAL, cfg, CPU)


def test_fit_learns_a_separable_problem():
    seen = []
    cfg = train_cfg()
    history = fit(tiny_model(), TRAIN, VAL, cfg, CPU, on_epoch_end=seen.append)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert seen == history.epochs
    assert history.epochs[-1].train_accuracy > 0.9
    assert history.epochs[-1].val_accuracy > 0.9
    losses = [e.train_loss for e in history.epochs]
    assert losses[-1] < losses[0]
    assert history.epochs[-1].val_loss < history.epochs[0].val_loss
    assert history.device == "cpu"
    assert history.precision == "fp32"
    assert all(0 < e.lr <= cfg.lr for e in history.epochs)
    assert history.epochs[-1].lr < cfg.lr / 100  # onecycle annealed by the last step
    assert len(history.rows()) == 3
    assert set(history.rows()[0]) >= {"epoch", "train_loss", "val_accuracy", "lr"}


def test_same_seed_same_history_other_seed_differs():
    first, again, other = train_tiny(seed=3), train_tiny(seed=3), train_tiny(seed=4)
    losses = [(e.train_loss, e.val_loss) for e in first.epochs]
    assert losses == [(e.train_loss, e.val_loss) for e in again.epochs]
    assert [e.train_accuracy for e in first.epochs] == [e.train_accuracy for e in again.epochs]
    assert losses != [(e.train_loss, e.val_loss) for e in other.epochs]


def test_huge_learning_rate_diverges_with_epoch_and_step():
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+ ") as info:
        train_tiny(lr=1e30, grad_clip=None)
    assert "train.lr" in str(info.value)


class NanAfter(nn.Module):
    """Finite logits for the first `calls` training forwards, NaN after."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.float().flatten(1)[:, :2] * self.weight / 255.0  # (B, 2)
        if self.training:
            self.calls -= 1
            if self.calls < 0:
                return logits * math.nan
        return logits


def test_nan_loss_names_epoch_and_step():
    # 64 images / batch 16 = 4 steps per epoch: the 6th step is epoch 2, step 2
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 2 "):
        fit(NanAfter(calls=5), TRAIN, VAL, train_cfg(), CPU)


def test_nan_at_first_step():
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 1 "):
        fit(NanAfter(calls=0), TRAIN, VAL, train_cfg(), CPU)


def test_infinite_input_diverges():
    images = TRAIN.images.float()
    images[0, 0, 0, 0] = math.inf
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d "):
        fit(tiny_model(), TensorData(images, TRAIN.labels), VAL, train_cfg(), CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.device.*cuda"):
        resolve_runtime(DeviceChoice.cuda, Precision.auto)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto resolves to CUDA here")
def test_auto_resolves_to_cpu_fp32_without_cuda():
    runtime = resolve_runtime(DeviceChoice.auto, Precision.auto)
    assert runtime.device == torch.device("cpu")
    assert runtime.autocast_dtype is None
    assert runtime.precision_name == "fp32"


def test_explicit_precisions_on_cpu():
    assert resolve_runtime(DeviceChoice.cpu, Precision.bf16).autocast_dtype == torch.bfloat16
    assert resolve_runtime(DeviceChoice.cpu, Precision.bf16).precision_name == "bfloat16"
    assert resolve_runtime(DeviceChoice.cpu, Precision.fp32).autocast_dtype is None
    assert resolve_runtime(DeviceChoice.cpu, Precision.auto).autocast_dtype is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_epoch_on_cuda_bf16():
    runtime = resolve_runtime(DeviceChoice.cuda, Precision.bf16)
    assert runtime.device.type == "cuda"
    history = fit(tiny_model(), TRAIN, VAL, train_cfg(epochs=1), runtime)
    assert history.device.startswith("cuda")
    assert history.precision == "bfloat16"
    assert len(history.epochs) == 1
    assert math.isfinite(history.epochs[0].train_loss)
    assert math.isfinite(history.epochs[0].val_loss)


# checkpoints ------------------------------------------------------------------


META = {
    "class_names": CLASS_NAMES,
    "in_channels": 1,
    "image_shape": [1, 8, 8],
    "normalization": {"mean": MEAN, "std": STD},
}


@pytest.fixture
def saved(tmp_path):
    model = tiny_model(seed=5).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so buffers must round-trip too
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, MODEL_CFG, META)
    return path, model


def test_checkpoint_round_trip(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    assert meta == META
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(VAL.images), model(VAL.images))
    fresh = tiny_model(seed=6).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(VAL.images), model(VAL.images))


def test_checkpoint_leaves_no_temporary_files(saved):
    path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_missing_checkpoint_names_path(tmp_path):
    path = tmp_path / "models" / "model.pt"
    with pytest.raises(DataError, match="checkpoint missing") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_unreadable_checkpoint_names_path(saved, kind):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"\x00junk" * 50)
    with pytest.raises(DataError, match="unreadable checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_empty_checkpoint_names_path(saved):
    path, _ = saved
    path.write_bytes(b"")
    with pytest.raises(DataError, match="unreadable checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_foreign_payload_names_path(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="not an mlpipe checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def edit_payload(path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p["state_dict"].pop("backbone.head.5.weight"),
        lambda p: p["state_dict"].update({"backbone.head.5.bias": torch.zeros(7)}),
        lambda p: p["model"].update({"hidden": 16}),
        lambda p: p["meta"].update({"class_names": ["a", "b", "c"]}),
    ],
    ids=["missing-key", "wrong-shape", "other-config", "other-num-classes"],
)
def test_state_dict_that_does_not_fit_names_path(saved, edit):
    path, _ = saved
    edit_payload(path, edit)
    with pytest.raises(DataError, match="weights do not fit the model") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
