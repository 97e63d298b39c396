"""The training loop on a tiny separable problem, runtime resolution, and checkpoints."""

from __future__ import annotations

import itertools
import logging
import math
import re

import pytest
import torch
import torch._dynamo  # the first optimiser imports it (~2 s): pay that at collection
from torch import nn

from mlpipe.config import to_dataclass
from mlpipe.errors import ConfigError, DataError
from mlpipe.models import build_model
from mlpipe.models.checkpoint import load_checkpoint, save_checkpoint
from mlpipe.models.cnn import CNNConfig
from mlpipe.train.batches import images_per_epoch, shard_batches
from mlpipe.train.config import (
    AugmentConfig,
    DeviceChoice,
    Monitor,
    OnBadCheckpoint,
    Precision,
    ResumeMode,
    RuntimeConfig,
    TrainConfig,
)
from mlpipe.train.device import Runtime, resolve_runtime, seed_everything, use_channels_last
from mlpipe.train.distributed import DistContext, context_from_env
from mlpipe.train.early_stopping import EarlyStopping
from mlpipe.train.engine import (
    History,
    StepStats,
    TensorData,
    TrainingDiverged,
    _build,
    _DivergenceGuard,
    evaluate_loss_accuracy,
    fit,
    validation_batch,
)
from mlpipe.train.resume import ResumeError, ResumeFile, run_identity

MODEL_CFG = CNNConfig(channels=[4], pool_size=2, hidden=8, dropout=0.0)
MEAN, STD = [0.45], [0.3]
CLASS_NAMES = ["dark", "bright"]


pytestmark = pytest.mark.usefixtures("one_thread")


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
        "seed": 0,
    }
    return TrainConfig(**(values | overrides))


CPU = Runtime(torch.device("cpu"), None)


def tiny_model(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return build_model(MODEL_CFG, 1, 2, MEAN, STD)


def train_tiny(seed: int = 0, channels_last: bool | None = None, **overrides) -> History:
    cfg = train_cfg(seed=seed, **overrides)
    runtime = Runtime(torch.device("cpu"), None, channels_last=channels_last)
    return fit(tiny_model(seed), TRAIN, VAL, cfg, runtime)


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


def test_a_sample_of_steps_reaches_the_tracker_once_per_epoch():
    """64 images / batch 2 = 32 steps an epoch: every step is sampled (fewer than 50)."""
    batches: list[list[StepStats]] = []
    cfg = train_cfg(batch_size=2, warmup_fraction=0.3)
    history = fit(tiny_model(), TRAIN, VAL, cfg, CPU, on_steps=batches.append)
    assert len(batches) == 3  # one call per epoch
    steps = [s for batch in batches for s in batch]
    assert [s.step for s in steps] == list(range(1, 97))
    assert [e.step for e in history.epochs] == [32, 64, 96]
    assert all(math.isfinite(s.loss) for s in steps)
    peak = max(range(len(steps)), key=lambda i: steps[i].lr)
    assert 0 < peak < 40 and steps[0].lr < steps[peak].lr / 5  # the warm-up shows
    assert steps[peak].lr == pytest.approx(cfg.lr, rel=0.05)
    assert steps[-1].lr < cfg.lr / 100
    assert "step" not in history.to_csv().splitlines()[0]  # the DVC plot is per epoch
    longer = fit(tiny_model(), separable(512, 2), VAL, train_cfg(batch_size=2, epochs=1),
                    CPU, on_steps=batches.append)  # fmt: skip
    assert [s.step for s in batches[-1]] == list(range(1, 257, 5))  # 256 // 50 = 5
    assert longer.epochs[0].step == 256


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
    with pytest.raises(ConfigError, match=r"runtime\.device.*cuda"):
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_channels_last_ema_augment_and_compile():
    runtime = resolve_runtime(DeviceChoice.cuda, Precision.auto, compile=True)
    assert runtime.autocast_dtype == torch.bfloat16  # auto: bf16 on CUDA
    assert torch.backends.cuda.matmul.allow_tf32
    model = tiny_model()
    cfg = train_cfg(epochs=2, augment=AugmentConfig(1, True), ema_decay=0.9)
    history = fit(model, TRAIN, VAL, cfg, runtime)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert history.epochs[-1].val_accuracy > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resume_is_exact_with_deterministic_algorithms(tmp_path):
    runtime = resolve_runtime(
        DeviceChoice.cuda, Precision.fp32, deterministic=True, channels_last=False
    )
    cfg = train_cfg(epochs=3)
    path = tmp_path / "resume.pt"
    try:
        whole = fit(dropout_model(), TRAIN, VAL, cfg, runtime)
        with pytest.raises(Killed):
            fit(
                dropout_model(),
                TRAIN,
                VAL,
                cfg,
                runtime,
                kill_after(2),
                checkpointer=resumable(path, cfg),
            )
        resumed = fit(dropout_model(), TRAIN, VAL, cfg, runtime, checkpointer=resumable(path, cfg))
    finally:
        torch.use_deterministic_algorithms(False)
    assert without_timings(resumed) == without_timings(whole)


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


def test_same_weights_give_the_same_bytes_whatever_the_file_name(saved, tmp_path):
    """dvc.lock must not change for identical weights: no temporary name inside the file."""
    path, model = saved
    again = tmp_path / "elsewhere" / "other-name.pt"
    save_checkpoint(again, model, MODEL_CFG, META)
    assert again.read_bytes() == path.read_bytes()
    payload = torch.load(again, map_location="cpu", weights_only=True)
    assert payload["meta"] == META
    expected = model.state_dict()
    assert payload["state_dict"].keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in payload["state_dict"].items())


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


# batches and data parallelism ----------------------------------------------------


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 4, 1), (10, 4, 2), (11, 4, 3), (9, 8, 2)])
def test_rank_shares_make_up_the_single_process_batches(n, batch, world):
    single = [(s.start, s.stop) for s in shard_batches(n, batch)]
    shares = [shard_batches(n, batch, rank, world) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # every rank takes the same number of steps
    for step, (start, stop) in enumerate(single):
        if stop - start < world:
            continue  # the short last batch that DDP drops
        parts = [shares[rank][step] for rank in range(world)]
        assert parts[0].start == start and parts[-1].stop == stop
        assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
        assert all(p.stop > p.start for p in parts)
        # DDP averages the ranks' gradients of scale * (share mean): scale = share * world / batch
        # makes that the mean over the whole batch, however unevenly it is split
        for p in parts:
            assert p.loss_scale == pytest.approx((p.stop - p.start) * world / (stop - start))
        assert sum(p.loss_scale for p in parts) == pytest.approx(world)


def test_one_process_takes_every_image_once_with_scale_one():
    spans = shard_batches(10, 4)
    assert [(s.start, s.stop) for s in spans] == [(0, 4), (4, 8), (8, 10)]
    assert all(s.loss_scale == 1.0 for s in spans)
    assert images_per_epoch(10, 4) == 10
    assert images_per_epoch(9, 8, world_size=2) == 8  # the last batch of 1 is dropped


@pytest.mark.parametrize(("batch", "used"), [(1000, 64), (65, 64), (64, 64), (16, 16)])
def test_batch_larger_than_the_training_split_is_capped_with_a_warning(caplog, batch, used):
    with caplog.at_level(logging.WARNING, logger="mlpipe.train.engine"):
        history = train_tiny(epochs=1, batch_size=batch)
    assert history.batch_size == history.summary()["batch_size"] == used  # -> train.json
    warned = [r.getMessage() for r in caplog.records if "train.batch_size" in r.getMessage()]
    if batch > len(TRAIN):
        assert warned == [
            f"train.batch_size {batch} is larger than the training split (64 images): "
            "training on the whole split, one step per epoch"
        ]
    else:
        assert warned == []


def test_context_from_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert context_from_env() == DistContext()
    assert not context_from_env().is_distributed and context_from_env().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (3, 4, 1, 2)
    assert ctx.is_distributed and not ctx.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4"):
        context_from_env()


def test_channels_last_is_resolved_from_config_device_and_model():
    cnn, mlp = tiny_model(), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    cuda = torch.device("cuda")
    assert use_channels_last(None, cuda, cnn) is True
    assert use_channels_last(None, cuda, mlp) is False
    assert use_channels_last(None, torch.device("cpu"), cnn) is False
    assert use_channels_last(True, torch.device("cpu"), mlp) is True
    assert use_channels_last(False, cuda, cnn) is False


def test_channels_last_on_cpu_takes_the_same_path():
    plain = train_tiny(seed=2, epochs=1)
    nhwc = train_tiny(seed=2, epochs=1, channels_last=True)
    assert nhwc.epochs[0].val_accuracy == plain.epochs[0].val_accuracy
    assert nhwc.epochs[0].train_loss == pytest.approx(plain.epochs[0].train_loss, rel=1e-4)


def test_deferred_divergence_check_names_the_first_bad_step():
    cfg = train_cfg()
    loop = _build(tiny_model(), cfg, CPU, TRAIN)
    guard = _DivergenceGuard(loop, epoch=2)
    guard.every = 4  # as on CUDA: one host sync per 4 steps
    for value in (1.0, 0.5, 0.7, 0.6, 0.4, math.inf, math.nan):
        guard.add(torch.tensor(value))
    with pytest.raises(TrainingDiverged, match=r"loss is inf at epoch 2, step 6 "):
        guard.flush()


# early stopping, EMA and augmentation in fit ------------------------------------


@pytest.mark.parametrize(
    ("monitor", "values", "patience", "min_delta", "stops_after"),
    [
        (Monitor.val_loss, [1.0, 0.9, 0.95, 0.91, 0.8], 2, 0.0, 4),
        (Monitor.val_loss, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7], 2, 0.0, None),
        (Monitor.val_loss, [1.0, 0.99, 0.98, 0.97], 2, 0.05, 3),
        (Monitor.val_accuracy, [0.5, 0.6, 0.6, 0.59], 2, 0.0, 4),
        (Monitor.val_accuracy, [0.5, 0.4], 1, 0.0, 2),
        (Monitor.val_loss, [1.0, 2.0, 3.0, 4.0], 0, 0.0, None),  # patience 0: off
    ],
)
def test_early_stopping_stops_at_the_right_epoch(monitor, values, patience, min_delta, stops_after):
    stopper = EarlyStopping(patience, min_delta, monitor)
    stopped = None
    for epoch, value in enumerate(values, start=1):
        if stopper.update(value, epoch):
            stopped = epoch
            break
    assert stopped == stops_after
    assert stopper.stopped_epoch == (stops_after or 0)


def test_early_stopping_state_round_trip():
    first = EarlyStopping(3, 0.01, Monitor.val_loss)
    for epoch, value in enumerate([1.0, 0.8, 0.85], start=1):
        first.update(value, epoch)
    second = EarlyStopping(3, 0.01, Monitor.val_loss)
    second.load_state_dict(first.state_dict())
    assert second == first
    assert (second.best, second.best_epoch, second.bad_epochs) == (0.8, 2, 1)


def test_fit_stops_early_when_validation_stops_improving():
    # lr ~ 0: the validation loss barely moves, so no epoch beats the first by 1.0
    seen = []
    history = fit(
        tiny_model(),
        TRAIN,
        VAL,
        train_cfg(epochs=10, lr=1e-12, early_stopping_patience=2, early_stopping_min_delta=1.0),
        CPU,
        on_epoch_end=seen.append,
    )
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.stopped_early
    assert len(seen) == 3


def test_fit_with_ema_validates_and_returns_the_ema_weights():
    model = tiny_model()
    history = fit(model, TRAIN, VAL, train_cfg(ema_decay=0.9), CPU)
    assert history.epochs[-1].val_accuracy > 0.9
    plain_model = tiny_model()
    fit(plain_model, TRAIN, VAL, train_cfg(), CPU)
    # the live weights trained identically; the returned model holds their average instead
    assert not torch.equal(
        model.state_dict()["backbone.head.5.weight"],
        plain_model.state_dict()["backbone.head.5.weight"],
    )
    loss, accuracy = evaluate_loss_accuracy(model, VAL, 64, CPU)
    assert accuracy == history.epochs[-1].val_accuracy
    assert loss == pytest.approx(history.epochs[-1].val_loss, rel=1e-5)


def test_fit_with_augmentation_is_deterministic_and_differs_from_plain():
    augment = AugmentConfig(crop_padding=1, hflip=True)
    first = train_tiny(seed=5, augment=augment)
    again = train_tiny(seed=5, augment=augment)
    plain = train_tiny(seed=5)
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in again.epochs]
    assert [e.train_loss for e in first.epochs] != [e.train_loss for e in plain.epochs]
    assert first.epochs[-1].val_accuracy > 0.9


def test_history_csv_and_summary():
    history = train_tiny(epochs=2)
    lines = history.to_csv().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr")
    assert len(lines) == 3 and "\r" not in history.to_csv()
    assert lines[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr"  # no clock
    assert history.to_csv() == train_tiny(epochs=2).to_csv()  # byte-stable for DVC
    summary = history.summary()
    assert summary["epochs"] == 2 and summary["resumed_from_epoch"] == 0
    assert summary["stopped_early"] is False


# resume --------------------------------------------------------------------------


class Killed(Exception):
    """Stands in for SIGKILL: raised from the epoch callback, before that epoch's save."""


def kill_after(epoch: int):
    def on_epoch_end(stats):
        if stats.epoch == epoch:
            raise Killed

    return on_epoch_end


RESUME_CFG = {
    "epochs": 4,
    "augment": AugmentConfig(crop_padding=1, hflip=True),
    "ema_decay": 0.9,
    "label_smoothing": 0.1,
    "early_stopping_patience": 3,
}
DROPOUT_CFG = CNNConfig(channels=[4], pool_size=2, hidden=8, dropout=0.3)


def resumable(path, cfg: TrainConfig, **kwargs) -> ResumeFile:
    identity = run_identity(DROPOUT_CFG, cfg, {"train": TRAIN, "val": VAL})
    return ResumeFile(path, identity, cfg.resume, cfg.on_bad_checkpoint, **kwargs)


def dropout_model() -> nn.Module:
    seed_everything(0)
    return build_model(DROPOUT_CFG, 1, 2, MEAN, STD)


def without_timings(history: History) -> list[dict[str, float]]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_second")}
        for row in history.rows()
    ]


def test_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path):
    cfg = train_cfg(**RESUME_CFG)
    whole_model = dropout_model()
    whole = fit(whole_model, TRAIN, VAL, cfg, CPU)

    path = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        fit(dropout_model(), TRAIN, VAL, cfg, CPU, kill_after(3), checkpointer=resumable(path, cfg))
    assert torch.load(path, weights_only=True)["state"]["epoch"] == 2
    torch.rand(1000)  # the global RNG moves on in between, as in a new process
    resumed_model = dropout_model()
    resumed = fit(resumed_model, TRAIN, VAL, cfg, CPU, checkpointer=resumable(path, cfg))

    assert resumed.resumed_from_epoch == 2
    assert without_timings(resumed) == without_timings(whole)  # bit-identical, not approx
    resumed_state = resumed_model.state_dict()
    for name, tensor in whole_model.state_dict().items():
        assert torch.equal(tensor, resumed_state[name]), name


def test_resume_after_the_last_epoch_trains_no_more(tmp_path):
    cfg = train_cfg(epochs=2)
    path = tmp_path / "resume.pt"
    first = fit(tiny_model(), TRAIN, VAL, cfg, CPU, checkpointer=resumable(path, cfg))
    seen = []
    again = fit(tiny_model(), TRAIN, VAL, cfg, CPU, seen.append, checkpointer=resumable(path, cfg))
    assert seen == []
    assert again.resumed_from_epoch == 2
    assert without_timings(again) == without_timings(first)


def test_complete_marker_and_never_start_from_scratch(tmp_path):
    cfg = train_cfg(epochs=1)
    path = tmp_path / "resume.pt"
    fit(tiny_model(), TRAIN, VAL, cfg, CPU, checkpointer=resumable(path, cfg))
    assert resumable(path, train_cfg(epochs=1, resume=ResumeMode.never)).load() is None
    resumable(path, cfg).mark_complete({"run_id": "x"})
    assert resumable(path, cfg).load() is None
    assert resumable(path, train_cfg(epochs=5)).load() is None  # other params: fine too
    with pytest.raises(ResumeError, match="finished"):
        resumable(path, train_cfg(epochs=1, resume=ResumeMode.must)).load()
    assert [p.name for p in tmp_path.iterdir()] == ["resume.pt"]  # no temporary files left


def test_resume_must_without_a_file_names_it(tmp_path):
    path = tmp_path / "models" / "resume.pt"
    with pytest.raises(ResumeError, match=r"train\.resume=must") as info:
        resumable(path, train_cfg(resume=ResumeMode.must)).load()
    assert str(path) in str(info.value)
    assert resumable(path, train_cfg()).load() is None  # auto: nothing to resume, fine


@pytest.fixture
def checkpoint(tmp_path):
    cfg = train_cfg(epochs=3)
    path = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        fit(tiny_model(), TRAIN, VAL, cfg, CPU, kill_after(2), checkpointer=resumable(path, cfg))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "unreadable resume checkpoint"),
        (lambda p: p.write_bytes(b""), "unreadable resume checkpoint"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not an mlpipe resume checkpoint"),
        (lambda p: save_checkpoint(p, tiny_model(), MODEL_CFG, META), "not an mlpipe resume"),
    ],
    ids=["truncated", "empty", "foreign", "final-model-format"],
)
def test_corrupt_checkpoint_is_an_error_naming_the_file(checkpoint, damage, message):
    damage(checkpoint)
    with pytest.raises(ResumeError, match=message) as info:
        resumable(checkpoint, train_cfg(epochs=3)).load()
    assert str(checkpoint) in str(info.value)
    assert "train.on_bad_checkpoint=warn" in str(info.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.01}, "train.lr: 0.03 -> 0.01"),
        ({"epochs": 4}, "train.epochs: 3 -> 4"),
        ({"augment": AugmentConfig(hflip=True)}, "train.augment.hflip: false -> true"),
    ],
)
def test_checkpoint_of_another_run_is_an_error_naming_the_change(checkpoint, change, named):
    with pytest.raises(ResumeError, match="written by a different run") as info:
        resumable(checkpoint, train_cfg(**({"epochs": 3} | change))).load()
    assert str(checkpoint) in str(info.value)
    assert named in str(info.value)


def test_checkpoint_of_other_data_is_an_error(checkpoint):
    cfg = train_cfg(epochs=3)
    other = TensorData(VAL.images.flip(0), VAL.labels.flip(0))
    identity = run_identity(DROPOUT_CFG, cfg, {"train": TRAIN, "val": other})
    with pytest.raises(ResumeError, match=r"data\.val"):
        ResumeFile(checkpoint, identity).load()


def test_policy_settings_do_not_invalidate_a_checkpoint(checkpoint):
    cfg = train_cfg(epochs=3, on_bad_checkpoint=OnBadCheckpoint.warn, resume=ResumeMode.must)
    assert resumable(checkpoint, cfg).load()["epoch"] == 1


def test_warn_ignores_a_bad_checkpoint_and_starts_over(checkpoint, caplog):
    checkpoint.write_bytes(b"\x00junk" * 10)
    cfg = train_cfg(epochs=3, on_bad_checkpoint=OnBadCheckpoint.warn)
    history = fit(tiny_model(), TRAIN, VAL, cfg, CPU, checkpointer=resumable(checkpoint, cfg))
    assert history.resumed_from_epoch == 0 and len(history.epochs) == 3
    assert "unreadable resume checkpoint" in caplog.text and str(checkpoint) in caplog.text
    assert without_timings(history) == without_timings(fit(tiny_model(), TRAIN, VAL, cfg, CPU))
    assert torch.load(checkpoint, weights_only=True)["state"]["epoch"] == 3  # overwritten


def test_must_with_a_bad_checkpoint_is_an_error_even_with_warn(checkpoint):
    checkpoint.write_bytes(b"junk")
    cfg = train_cfg(epochs=3, on_bad_checkpoint=OnBadCheckpoint.warn, resume=ResumeMode.must)
    with pytest.raises(ResumeError, match="unreadable"):
        resumable(checkpoint, cfg).load()


def test_state_that_does_not_fit_the_model_is_rejected_by_fit(checkpoint):
    cfg = train_cfg(epochs=3)
    other_model = build_model(CNNConfig(channels=[6], pool_size=2, hidden=8), 1, 2, MEAN, STD)
    with pytest.raises(ResumeError, match="weights do not fit the model") as info:
        fit(other_model, TRAIN, VAL, cfg, CPU, checkpointer=resumable(checkpoint, cfg))
    assert str(checkpoint) in str(info.value)


def test_checkpoint_holds_everything_needed_and_nothing_else(checkpoint):
    payload = torch.load(checkpoint, weights_only=True)
    assert payload["format"] == "mlpipe-resume" and payload["complete"] is False
    assert set(payload["state"]) == {
        "epoch",
        "step",  # 0: at the end of an epoch (train.checkpoint_every_steps saves inside one)
        "partial",
        "model",
        "optimizer",
        "scheduler",
        "generator",
        "ema",
        "early_stopping",
        "history",
        "rng",
    }
    assert set(payload["state"]["rng"][0]) >= {"torch", "numpy", "python"}
    assert len(payload["state"]["history"]) == 1


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"augment": {"crop_padding": -1}}, "train.augment.crop_padding"),
        ({"augment": {"flip": True}}, "train.augment.flip"),
        ({"ema_decay": 1.0}, "train.ema_decay"),
        ({"early_stopping_patience": -1}, "train.early_stopping_patience"),
        ({"early_stopping_metric": "val_f1"}, "train.early_stopping_metric"),
        ({"resume": "sometimes"}, "train.resume"),
        ({"on_bad_checkpoint": "ignore"}, "train.on_bad_checkpoint"),
        ({"compile": "maybe"}, "runtime.compile"),
        ({"num_threads": -1}, "runtime.num_threads"),
    ],
)
def test_bad_engine_settings_name_the_key(values, key):
    section = key.split(".")[0]
    schema = RuntimeConfig if section == "runtime" else TrainConfig
    with pytest.raises(ConfigError, match=rf"params\.yaml: {re.escape(key)}:"):
        to_dataclass(schema, values, f"params.yaml: {section}")


def test_engine_settings_load_from_yaml_values():
    cfg = to_dataclass(
        TrainConfig,
        {"augment": {"crop_padding": 2, "hflip": True}, "ema_decay": 0.999, "resume": "must"},
        "params.yaml: train",
    )
    assert cfg.augment == AugmentConfig(2, True)
    assert cfg.ema_decay == 0.999 and cfg.resume is ResumeMode.must
    runtime = to_dataclass(RuntimeConfig, {}, "params.yaml: runtime")
    assert runtime.channels_last is None and runtime.compile is False


def test_progress_lines_when_output_is_not_a_terminal(caplog, monkeypatch):
    """tqdm is off without a TTY (as under pytest): a heartbeat line says how far it is."""
    from mlpipe.train import engine

    monkeypatch.setattr(engine.Heartbeat, "every_s", 0.0)
    with caplog.at_level(logging.INFO, logger="mlpipe.train.engine"):
        train_tiny(epochs=1)
    beats = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert beats and beats[0].startswith("epoch 1/1: step 1/")
    monkeypatch.setattr(engine.Heartbeat, "every_s", 3600.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlpipe.train.engine"):
        train_tiny(epochs=1)
    assert not [r for r in caplog.records if "steps/s" in r.getMessage()]


def test_run_names_tell_runs_apart():
    from datetime import UTC, datetime

    from mlpipe.train.stage import run_name

    at = datetime(2026, 12, 3, 17, 5, 9, tzinfo=UTC)
    assert run_name("cnn", {"dvc_exp_name": "brisk-fox", "git_commit": "a" * 40}) == "cnn-brisk-fox"
    assert run_name("vit", {"git_commit": "0123456789ab"}, at) == "vit-01234567-1203-170509"
    assert run_name("cnn", {}, at) == "cnn-local-1203-170509"


def test_validation_batches_are_four_training_batches_unless_the_images_are_large():
    assert validation_batch(128, (1, 28, 28)) == 512  # Fashion-MNIST: as before
    assert validation_batch(64, (3, 96, 96)) == 75  # an inference batch of 96x96 RGB
    assert validation_batch(128, (3, 224, 224)) == 128  # never below the training batch
