"""The training loop. Knows nothing of MLflow, files or params.yaml.

Data lives on the device as tensors; batches are drawn by index, so there is no
per-sample Python work on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mlpipe.config import TrainConfig
from mlpipe.errors import MlpipeError
from mlpipe.training.device import Runtime
from mlpipe.training.schedules import lr_multiplier

log = logging.getLogger(__name__)


class TrainingDiverged(MlpipeError):
    """The loss became NaN or infinite."""


@dataclass
class TensorData:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def to(self, device: torch.device) -> TensorData:
        return TensorData(self.images.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float  # at the end of the epoch
    seconds: float
    images_per_second: float


@dataclass
class History:
    epochs: list[EpochStats] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"

    @property
    def train_seconds(self) -> float:
        return sum(e.seconds for e in self.epochs)

    def rows(self) -> list[dict[str, float]]:
        return [asdict(e) for e in self.epochs]


EpochCallback = Callable[[EpochStats], None]


def fit(
    model: nn.Module,
    train: TensorData,
    val: TensorData,
    cfg: TrainConfig,
    runtime: Runtime,
    on_epoch_end: EpochCallback | None = None,
) -> History:
    """Train `model` in place; return per-epoch statistics."""
    model.to(runtime.device)
    train, val = train.to(runtime.device), val.to(runtime.device)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=runtime.device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, cfg.schedule, cfg.warmup_fraction)
    )
    history = History(device=str(runtime.device), precision=runtime.precision_name)
    generator = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = _train_epoch(
            model, train, cfg, runtime, optimizer, scheduler, generator, epoch
        )
        _sync(runtime.device)
        seconds = time.perf_counter() - start
        val_loss, val_acc = evaluate_loss_accuracy(model, val, cfg.batch_size * 4, runtime)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            lr=float(scheduler.get_last_lr()[0]),
            seconds=seconds,
            images_per_second=len(train) / seconds,
        )
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
            epoch,
            cfg.epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            stats.images_per_second,
        )
        history.epochs.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history


def _train_epoch(
    model: nn.Module,
    data: TensorData,
    cfg: TrainConfig,
    runtime: Runtime,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    epoch: int,
) -> tuple[float, float]:
    model.train()
    order = torch.randperm(len(data), generator=generator).to(runtime.device)
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    batches = order.split(cfg.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, disable=None)
    for step, idx in enumerate(bar):
        x, y = data.images[idx], data.labels[idx]
        with runtime.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step + 1} "
                f"(lr {scheduler.get_last_lr()[0]:.3g}); lower train.lr or enable train.grad_clip"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(dim=1) == y).sum()
    return loss_sum.item() / len(data), correct.item() / len(data)


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime
) -> torch.Tensor:
    """Logits (N, num_classes) in fp32 on the CPU, in eval mode."""
    model.eval()
    out = []
    for chunk in images.split(batch_size):
        with runtime.autocast():
            out.append(model(chunk.to(runtime.device)).float().cpu())
    return torch.cat(out)


def evaluate_loss_accuracy(
    model: nn.Module, data: TensorData, batch_size: int, runtime: Runtime
) -> tuple[float, float]:
    logits = predict_logits(model, data.images, batch_size, runtime)
    labels = data.labels.cpu()
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
