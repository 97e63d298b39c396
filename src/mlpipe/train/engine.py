"""The training loop. Knows nothing of MLflow, files or params.yaml.

Data lives on the device as tensors (`TensorData`); batches are drawn (and augmented)
there by index, so there is no per-sample Python work on the hot path and no host sync per
step on CUDA. A split too large for that streams from its shards (`stream.StreamSplit`,
uint8 batches from DataLoader workers, augmented on the device); both are a `DataSource`,
so the loop is the same.
Everything that differs between CPU, CUDA, one process and torchrun is resolved once in
`_build` (device, precision, memory format, DDP, compile); the loop itself has one path.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mlpipe.errors import MlpipeError
from mlpipe.models import inference_batch, predict_logits
from mlpipe.train import distributed
from mlpipe.train.batches import (
    EpochPlan,
    capped_batch_size,
    images_per_epoch,
    plan_epoch,
    shard_batches,
)
from mlpipe.train.config import AugmentConfig, Monitor, TrainConfig
from mlpipe.train.device import Runtime, rng_state, set_rng_state, use_channels_last
from mlpipe.train.early_stopping import EarlyStopping
from mlpipe.train.ema import ModelEma
from mlpipe.train.schedules import lr_multiplier

log = logging.getLogger(__name__)


class TrainingDiverged(MlpipeError):
    """The loss became NaN or infinite."""


Batch = tuple[torch.Tensor, torch.Tensor]  # (B, C, H, W) uint8, (B,) int64 labels


class EpochBatches(Protocol):
    """One epoch's training steps: (x, y, loss_scale) on the device, x augmented and in the
    model's memory format; loss_scale makes DDP's gradient mean the global batch's mean."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]: ...


class DataSource(Protocol):
    """A split as `fit` takes it: `TensorData` (in memory, on the device) or
    `stream.StreamSplit` (read from shards as it goes). One training loop serves both."""

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image."""

    def to(self, device: torch.device) -> DataSource: ...

    def train_steps(self, batch_size: int, ctx: distributed.DistContext) -> int: ...

    def train_images(self, batch_size: int, ctx: distributed.DistContext) -> int:
        """Images all ranks together train on per epoch."""

    def train_epoch(
        self,
        generator: torch.Generator,
        epoch: int,
        batch_size: int,
        augment_cfg: AugmentConfig,
        ctx: distributed.DistContext,
        memory_format: torch.memory_format = torch.contiguous_format,
        first_step: int = 0,
    ) -> EpochBatches: ...

    def ordered(self, batch_size: int, ctx: distributed.DistContext) -> Iterator[Batch]:
        """This rank's share of the split in split order, on the device (validation)."""


@dataclass
class TensorData:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    shuffle_buffer: int | None = None  # train.shuffle_buffer (batches.epoch_order); None: all

    @classmethod
    def from_numpy(cls, images: Any, labels: Any, shuffle_buffer: int | None = None) -> TensorData:
        return cls(torch.from_numpy(images), torch.from_numpy(labels), shuffle_buffer)

    def to(self, device: torch.device) -> TensorData:
        return TensorData(self.images.to(device), self.labels.to(device), self.shuffle_buffer)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def train_steps(self, batch_size: int, ctx: distributed.DistContext) -> int:
        return len(shard_batches(len(self), batch_size, 0, ctx.world_size))

    def train_images(self, batch_size: int, ctx: distributed.DistContext) -> int:
        return images_per_epoch(len(self), batch_size, ctx.world_size)

    def train_epoch(
        self,
        generator: torch.Generator,
        epoch: int,
        batch_size: int,
        augment_cfg: AugmentConfig,
        ctx: distributed.DistContext,
        memory_format: torch.memory_format = torch.contiguous_format,
        first_step: int = 0,
    ) -> EpochBatches:
        """The order and augmentation drawn from `generator`: the same as a streamed split's."""
        device = self.images.device
        plan = plan_epoch(
            generator, len(self), batch_size, augment_cfg, ctx, device, memory_format,
            self.shuffle_buffer,
        )  # fmt: skip
        return PlannedEpoch(plan, self.images, self.labels, first_step)

    def ordered(self, batch_size: int, ctx: distributed.DistContext) -> Iterator[Batch]:
        for share in shard_batches(len(self), len(self), ctx.rank, ctx.world_size):  # 0 or 1
            for start in range(share.start, share.stop, batch_size):
                stop = min(start + batch_size, share.stop)
                yield self.images[start:stop], self.labels[start:stop]


@dataclass
class PlannedEpoch:
    """An in-memory epoch: the plan's batches gathered from tensors on the device."""

    plan: EpochPlan
    images: torch.Tensor
    labels: torch.Tensor
    first: int = 0

    def __len__(self) -> int:
        return len(self.plan) - self.first

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        for step in range(self.first, len(self.plan)):
            x, y = self.plan.batch(self.images, self.labels, step)
            yield x, y, self.plan.spans[step].loss_scale


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float  # of the EMA weights when train.ema_decay is set
    lr: float  # at the end of the epoch
    seconds: float
    images_per_second: float
    step: int = 0  # optimizer steps over all epochs when this epoch ended (MLflow's step)


WALL_CLOCK_FIELDS = ("seconds", "images_per_second")
CSV_FIELDS = [f.name for f in fields(EpochStats) if f.name not in (*WALL_CLOCK_FIELDS, "step")]
STEP_POINTS_PER_EPOCH = 50  # training-loss points per epoch for the tracker's curves


@dataclass
class StepStats:
    """One recorded optimizer step, for curves finer than an epoch (the warm-up, spikes)."""

    step: int  # 1-based, over all epochs
    loss: float  # of that step's batch, on this rank
    lr: float  # the learning rate that step used


@dataclass
class History:
    epochs: list[EpochStats] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 0  # images per step: train.batch_size, capped at the training split
    resumed_from_epoch: int = 0  # 0: started from scratch
    stopped_early: bool = False

    @property
    def train_seconds(self) -> float:
        return sum(e.seconds for e in self.epochs)

    def rows(self) -> list[dict[str, float]]:
        return [asdict(e) for e in self.epochs]

    def to_csv(self) -> str:
        """One row per epoch (the DVC plot), without wall-clock columns: the same training
        gives the same bytes, so DVC sees no change (timings go to MLflow and train.json)."""
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(self.rows())
        return buf.getvalue()

    def summary(self) -> dict[str, Any]:
        last = self.epochs[-1]
        return {
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "train_seconds": round(self.train_seconds, 2),
            "images_per_second": round(last.images_per_second, 1),
            "val_accuracy": round(last.val_accuracy, 4),
            "epochs": len(self.epochs),
            "resumed_from_epoch": self.resumed_from_epoch,
            "stopped_early": self.stopped_early,
        }


EpochCallback = Callable[[EpochStats], None]
StepCallback = Callable[[list[StepStats]], None]  # about STEP_POINTS_PER_EPOCH, per epoch


class Checkpointer(Protocol):
    """Where the resume state lives (see resume.py); `fit` calls it on every rank."""

    where: str  # names the file in messages

    def load(self) -> dict[str, Any] | None:
        """A state saved by `save` for this very run, or None to start from scratch."""

    def save(self, state: dict[str, Any]) -> None:
        """Called once per epoch, after `on_epoch_end`."""

    def reject(self, reason: str) -> None:
        """The loaded state does not fit: raise, or warn (then training starts over)."""


@dataclass
class _Loop:
    """Everything that carries over from one epoch to the next, and so into a checkpoint."""

    cfg: TrainConfig
    runtime: Runtime
    model: nn.Module  # the plain model: weights, evaluation, EMA source
    module: nn.Module  # what the training step calls: `model`, maybe in DDP, maybe compiled
    memory_format: torch.memory_format
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # batch order and augmentation
    ema: ModelEma | None
    stopper: EarlyStopping
    history: History
    batch_size: int  # train.batch_size, at most the training split
    steps_per_epoch: int
    epoch: int = 0  # epochs completed
    step: int = 0  # steps of epoch `epoch + 1` done (a checkpoint inside an epoch)
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0])  # its loss sum, correct
    epoch_generator: torch.Tensor | None = None  # `generator` before this epoch's draw
    on_steps: StepCallback | None = None  # not state: a resumed run passes its own
    checkpointer: Checkpointer | None = None  # not state: for train.checkpoint_every_steps

    def state_dict(self) -> dict[str, Any]:
        """A collective under DDP (every rank's RNG state is gathered)."""
        inside = self.step > 0 and self.epoch_generator is not None
        return {
            "epoch": self.epoch,
            "step": self.step,
            "partial": distributed.gather_objects(self.partial, self.runtime.dist),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # inside an epoch: the state its order was drawn from, to draw it again
            "generator": self.epoch_generator if inside else self.generator.get_state(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "history": self.history.rows(),
            "rng": distributed.gather_objects(rng_state(), self.runtime.dist),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history.epochs = [EpochStats(**row) for row in state["history"]]
        self.epoch = self.history.resumed_from_epoch = int(state["epoch"])
        self.step = int(state.get("step", 0))
        if "partial" in state:
            self.partial = list(state["partial"][self.runtime.dist.rank])
        set_rng_state(state["rng"][self.runtime.dist.rank])


def fit(
    model: nn.Module,
    train: DataSource,
    val: DataSource,
    cfg: TrainConfig,
    runtime: Runtime,
    on_epoch_end: EpochCallback | None = None,
    *,
    checkpointer: Checkpointer | None = None,
    on_steps: StepCallback | None = None,
) -> History:
    """Train `model` in place; return per-epoch statistics.

    With `checkpointer`, continue from its saved state and save after every epoch. With
    train.ema_decay, `model` ends holding the EMA weights (those validated, to be saved).
    Under torchrun every rank calls this; `on_epoch_end` runs on every rank. `on_steps`
    gets a sample of steps (loss, lr) once per epoch: one host sync per epoch.
    """
    loop = _build(model, cfg, runtime, train)
    loop.on_steps, loop.checkpointer = on_steps, checkpointer
    if checkpointer is not None:
        _restore(loop, checkpointer)
        _require_same_start(loop)
    train, val = train.to(runtime.device), val.to(runtime.device)
    for epoch in range(loop.epoch + 1, cfg.epochs + 1):
        if loop.stopper.should_stop:
            break
        stats = _run_epoch(loop, train, val, epoch)
        loop.history.epochs.append(stats)
        loop.epoch = epoch
        stop = loop.stopper.update(_monitored(stats, cfg.early_stopping_metric), epoch)
        if on_epoch_end is not None:
            on_epoch_end(stats)
        if checkpointer is not None:
            checkpointer.save(loop.state_dict())
        if stop:
            log.info(
                "early stopping after epoch %d: %s has not improved since epoch %d",
                epoch,
                cfg.early_stopping_metric.value,
                loop.stopper.best_epoch,
            )
            break
    loop.history.stopped_early = loop.stopper.should_stop
    if loop.ema is not None:
        model.load_state_dict(loop.ema.module.state_dict())
    return loop.history


def _build(model: nn.Module, cfg: TrainConfig, runtime: Runtime, train: DataSource) -> _Loop:
    torch.manual_seed(cfg.seed + runtime.dist.rank)  # dropout; differs between ranks
    model.to(runtime.device)
    channels_last = use_channels_last(runtime.channels_last, runtime.device, model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)  # type: ignore[call-overload]
    module = distributed.wrap_ddp(model, runtime.dist, runtime.device)
    if runtime.compile:
        module = torch.compile(module)  # type: ignore[assignment]
    batch_size = _batch_size(cfg, len(train), runtime.dist.is_main)
    steps = train.train_steps(batch_size, runtime.dist)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=runtime.device.type == "cuda",
    )
    total = steps * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total, cfg.schedule, cfg.warmup_fraction)
    )
    return _Loop(
        cfg=cfg,
        runtime=runtime,
        model=model,
        module=module,
        memory_format=memory_format,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(cfg.seed),
        ema=None if cfg.ema_decay is None else ModelEma(model, cfg.ema_decay),
        stopper=EarlyStopping(
            cfg.early_stopping_patience, cfg.early_stopping_min_delta, cfg.early_stopping_metric
        ),
        history=History(
            device=str(runtime.device), precision=runtime.precision_name, batch_size=batch_size
        ),
        batch_size=batch_size,
        steps_per_epoch=steps,
    )


def _batch_size(cfg: TrainConfig, n_train: int, warn: bool) -> int:
    batch_size = capped_batch_size(cfg.batch_size, n_train)
    if batch_size < cfg.batch_size and warn:
        log.warning(
            "train.batch_size %d is larger than the training split (%d images): training on "
            "the whole split, one step per epoch",
            cfg.batch_size,
            n_train,
        )
    return batch_size


def _restore(loop: _Loop, checkpointer: Checkpointer) -> None:
    state = checkpointer.load()
    if state is None:
        return
    problem = _state_mismatch(loop, state)
    if problem is not None:
        checkpointer.reject(problem)
        return
    loop.load_state_dict(state)
    inside = f", step {loop.step} of epoch {loop.epoch + 1}" if loop.step else ""
    log.info("resumed from %s after epoch %d%s", checkpointer.where, loop.epoch, inside)


def _require_same_start(loop: _Loop) -> None:
    """Under torchrun: every rank starts from the same epoch and weights, or all stop now."""
    if loop.runtime.dist.is_distributed:
        digest = distributed.tensors_digest(loop.model.state_dict().items())
        distributed.require_agreement(
            f"epoch {loop.epoch}, weights {digest}",
            "where training starts",
            loop.runtime.dist,
            "delete every node's resume checkpoint, or set train.resume=never, and rerun",
        )


_STATE_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "generator",
    "ema",
    "early_stopping",
    "history",
    "rng",
)


def _state_mismatch(loop: _Loop, state: dict[str, Any]) -> str | None:
    """Why `state` cannot be loaded into `loop`, checked before anything is changed."""
    missing = sorted(set(_STATE_KEYS) - set(state))
    if missing:
        return f"incomplete resume state: no {', '.join(missing)}"
    own = {k: tuple(v.shape) for k, v in loop.model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state["model"].items()}
    if own != saved:
        diff = sorted(set(own) ^ set(saved)) or [k for k in own if own[k] != saved[k]]
        return f"weights do not fit the model (first difference: {diff[0]})"
    if len(state["rng"]) != loop.runtime.dist.world_size:
        return f"saved by {len(state['rng'])} processes, now {loop.runtime.dist.world_size}"
    if (state["ema"] is None) != (loop.ema is None):
        return "saved with a different train.ema_decay setting"
    return None


def _monitored(stats: EpochStats, monitor: Monitor) -> float:
    return float(getattr(stats, monitor.value))


def _run_epoch(loop: _Loop, train: DataSource, val: DataSource, epoch: int) -> EpochStats:
    start = time.perf_counter()
    train_loss, train_acc, n_images = _train_epoch(loop, train, epoch)
    _sync(loop.runtime.device)
    seconds = time.perf_counter() - start
    eval_model = loop.model if loop.ema is None else loop.ema.module
    val_loss, val_acc = _validate(eval_model, val, loop)
    stats = EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_acc,
        val_loss=val_loss,
        val_accuracy=val_acc,
        lr=float(loop.scheduler.get_last_lr()[0]),
        seconds=seconds,
        images_per_second=n_images / seconds,
        step=epoch * loop.steps_per_epoch,
    )
    log.info(
        "epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
        epoch,
        loop.cfg.epochs,
        train_loss,
        train_acc,
        val_loss,
        val_acc,
        stats.images_per_second,
    )
    return stats


def _train_epoch(loop: _Loop, data: DataSource, epoch: int) -> tuple[float, float, int]:
    cfg, runtime = loop.cfg, loop.runtime
    loop.module.train()
    first = loop.step  # > 0: resumed from a checkpoint inside this epoch
    loop.epoch_generator = loop.generator.get_state()
    batches = data.train_epoch(
        loop.generator,
        epoch,
        loop.batch_size,
        cfg.augment,
        runtime.dist,
        loop.memory_format,
        first_step=first,
    )
    guard = _DivergenceGuard(loop, epoch)
    guard.checked = first
    sampled = _StepSampler(loop, epoch)
    loss_sum = torch.tensor(loop.partial[0] if first else 0.0, device=runtime.device)
    correct = torch.tensor(int(loop.partial[1]) if first else 0, device=runtime.device)
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=None if runtime.dist.is_main else True,
    )
    beat = Heartbeat(
        f"epoch {epoch}/{cfg.epochs}", len(batches), runtime.dist.is_main and bar.disable
    )
    for step, (x, y, scale) in enumerate(bar, start=first):
        beat.tick(step - first)
        with runtime.autocast():
            logits = loop.module(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        guard.add(loss)
        sampled.add(step, loss)
        loop.optimizer.zero_grad(set_to_none=True)
        (loss if scale == 1.0 else loss * scale).backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(loop.model.parameters(), cfg.grad_clip)
        loop.optimizer.step()
        loop.scheduler.step()
        if loop.ema is not None:
            loop.ema.update()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(dim=1) == y).sum()
        if _checkpoint_due(loop, step + 1):
            guard.flush()
            sampled.flush()
            loop.step, loop.partial = step + 1, [loss_sum.item(), float(correct.item())]
            loop.checkpointer.save(loop.state_dict())  # type: ignore[union-attr]
    loop.step = 0
    guard.flush()
    sampled.flush()
    distributed.all_reduce_sum([loss_sum, correct], runtime.dist)
    n = data.train_images(loop.batch_size, runtime.dist)
    return loss_sum.item() / n, correct.item() / n, n


def _checkpoint_due(loop: _Loop, done: int) -> bool:
    """After `done` steps of the epoch: train.checkpoint_every_steps, not at its end (the
    epoch's own checkpoint follows)."""
    every = loop.cfg.checkpoint_every_steps
    return (
        loop.checkpointer is not None
        and every > 0
        and done % every == 0
        and done < loop.steps_per_epoch
    )


class Heartbeat:
    """Progress as a log line every `every_s` seconds, for output that is not a terminal
    (CI, `dvc queue logs`, a file), where tqdm's bar is off and an epoch can take minutes."""

    every_s = 30.0

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        """Called before each step with the number of steps done."""
        if not self.enabled or done == 0:
            return
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = done / (now - self.start)
        left = (self.total - done) / rate
        log.info(
            "%s: step %d/%d (%.0f%%), %.1f steps/s, about %.0f s left in the epoch",
            self.label,
            done,
            self.total,
            100 * done / self.total,
            rate,
            left,
        )


class _StepSampler:
    """Every k-th step's loss and lr, kept on the device and handed to `loop.on_steps` at
    the end of the epoch, so finer curves cost no extra host syncs during the epoch."""

    def __init__(self, loop: _Loop, epoch: int) -> None:
        self.loop = loop
        self.every = max(1, loop.steps_per_epoch // STEP_POINTS_PER_EPOCH)
        self.first = (epoch - 1) * loop.steps_per_epoch  # steps before this epoch
        self.steps: list[int] = []
        self.lrs: list[float] = []
        self.losses: list[torch.Tensor] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        """Before the optimizer step: the scheduler's lr is the one this step uses."""
        if self.loop.on_steps is None or step % self.every:
            return
        self.steps.append(self.first + step + 1)
        self.lrs.append(float(self.loop.scheduler.get_last_lr()[0]))
        self.losses.append(loss.detach().float())

    def flush(self) -> None:
        if self.loop.on_steps is None or not self.steps:
            return
        losses = torch.stack(self.losses).cpu().tolist()
        rows = zip(self.steps, losses, self.lrs, strict=True)
        self.loop.on_steps([StepStats(step, loss, lr) for step, loss, lr in rows])
        self.steps, self.lrs, self.losses = [], [], []


class _DivergenceGuard:
    """Names the first step whose loss is NaN or infinite.

    Looking at a loss is a host sync: on CUDA losses are checked every
    `runtime.loss_check_every` steps, on the CPU at once (before the backward pass). A few
    steps trained past a NaN do no harm: the run stops before the epoch's checkpoint.
    """

    def __init__(self, loop: _Loop, epoch: int) -> None:
        self.loop, self.epoch = loop, epoch
        self.every = 1 if loop.runtime.device.type == "cpu" else 32
        self.pending: list[torch.Tensor] = []
        self.checked = 0  # steps of this epoch known to be finite

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        losses = torch.stack(self.pending)
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            self._raise(self.checked + i, float(losses[i]))
        self.checked += len(self.pending)
        self.pending.clear()

    def _raise(self, step: int, value: float) -> None:
        cfg = self.loop.cfg
        total = self.loop.steps_per_epoch * cfg.epochs
        global_step = (self.epoch - 1) * self.loop.steps_per_epoch + step
        lr = cfg.lr * lr_multiplier(global_step, total, cfg.schedule, cfg.warmup_fraction)
        raise TrainingDiverged(
            f"training diverged: loss is {value} at epoch {self.epoch}, step {step + 1} "
            f"(lr {lr:.3g}); lower train.lr or enable train.grad_clip"
        )


def validation_batch(train_batch: int, image_shape: tuple[int, ...]) -> int:
    """Images per validation batch: 4x the training batch (no gradients to keep), but no more
    than an inference batch of these images (`inference_batch`: their activations grow with
    the pixels), and never fewer than the training batch."""
    return min(4 * train_batch, max(train_batch, inference_batch(image_shape)))


@torch.no_grad()
def _validate(model: nn.Module, data: DataSource, loop: _Loop) -> tuple[float, float]:
    """Mean loss and accuracy over all of `data`; each rank evaluates its share."""
    runtime = loop.runtime
    distributed.broadcast_buffers(model, runtime.dist)
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    for x, y in data.ordered(validation_batch(loop.cfg.batch_size, data.image_shape), runtime.dist):
        with runtime.autocast():
            logits = model(x.contiguous(memory_format=loop.memory_format)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    distributed.all_reduce_sum([loss_sum, correct], runtime.dist)
    return loss_sum.item() / len(data), correct.item() / len(data)


def evaluate_loss_accuracy(
    model: nn.Module, data: TensorData, batch_size: int, runtime: Runtime
) -> tuple[float, float]:
    logits = predict_logits(model, data.images, batch_size, runtime.device, runtime.autocast)
    labels = data.labels.cpu()
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
