"""The `train` and `runtime` sections of params.yaml.

`train` is what is computed (epochs, optimiser, schedule, augmentation, resume policy);
`runtime` is where and how fast (device, precision, threads, compile, memory format).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from mlpipe.config import check


class Schedule(str, Enum):
    onecycle = "onecycle"
    cosine = "cosine"
    constant = "constant"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class ResumeMode(str, Enum):
    auto = "auto"  # resume from a matching resume checkpoint if there is one
    never = "never"  # always start over (the checkpoint is overwritten)
    must = "must"  # fail unless there is a matching checkpoint to resume


class OnBadCheckpoint(str, Enum):
    error = "error"  # a corrupt or foreign resume checkpoint stops the stage
    warn = "warn"  # ... or is ignored with a warning, and training starts over


class InMemory(str, Enum):
    auto = "auto"  # on the device when train + val fit train.memory_share of its memory
    true = "true"  # always: both splits as tensors on the device (the fast path)
    false = "false"  # always stream shards from disk through a DataLoader


class Monitor(str, Enum):
    val_loss = "val_loss"  # lower is better
    val_accuracy = "val_accuracy"  # higher is better


@dataclass
class AugmentConfig:
    """Train-time augmentation of raw image batches, on the device."""

    crop_padding: int = 0  # zero-pad by this many pixels, then crop back at a random offset
    hflip: bool = False  # mirror half the images left-right (not for digits or text)

    def __post_init__(self) -> None:
        check(
            0 <= self.crop_padding <= 64,
            "augment.crop_padding",
            f"must be in [0, 64], got {self.crop_padding}",
        )


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule.onecycle
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0: off
    early_stopping_min_delta: float = 0.0  # smaller changes do not count as improvement
    early_stopping_metric: Monitor = Monitor.val_loss
    ema_decay: float | None = None  # e.g. 0.999: validate and save an EMA of the weights
    resume: ResumeMode = ResumeMode.auto
    on_bad_checkpoint: OnBadCheckpoint = OnBadCheckpoint.error
    checkpoint_every_steps: int = 0  # also save the resume state inside epochs; 0: per epoch
    # Where the training data lives while training (see mlpipe.train.memory): a train key,
    # not a data one, so that flipping it reruns train only, never ingest.
    in_memory: str = "auto"  # auto | true | false (a str: YAML and -S read true as a bool)
    memory_share: float = 0.5  # auto: in memory when train + val take at most this share
    # epoch order: a split of more images is shuffled within windows of this many neighbours
    shuffle_buffer: int = 65536
    loader_workers: int | None = None  # streaming: DataLoader processes; null: by device

    def __post_init__(self) -> None:
        check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        check(
            self.early_stopping_patience >= 0,
            "early_stopping_patience",
            f"must be >= 0 (0: off), got {self.early_stopping_patience}",
        )
        check(
            math.isfinite(self.early_stopping_min_delta) and self.early_stopping_min_delta >= 0,
            "early_stopping_min_delta",
            f"must be finite and >= 0, got {self.early_stopping_min_delta}",
        )
        check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            "ema_decay",
            f"must be in (0, 1), or null, got {self.ema_decay}",
        )
        self.in_memory = str(self.in_memory).lower()
        choices = [m.value for m in InMemory]
        check(
            self.in_memory in choices,
            "in_memory",
            f"must be one of {', '.join(choices)}, got {self.in_memory!r}",
        )
        check(
            0.0 < self.memory_share <= 1.0,
            "memory_share",
            f"must be in (0, 1], got {self.memory_share}",
        )
        check(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            f"must be >= 0 (0: at the end of each epoch only), got {self.checkpoint_every_steps}",
        )
        check(self.shuffle_buffer > 0, "shuffle_buffer", f"must be > 0, got {self.shuffle_buffer}")
        check(
            self.loader_workers is None or self.loader_workers >= 0,
            "loader_workers",
            f"must be >= 0, or null, got {self.loader_workers}",
        )
        check(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        check(
            math.isfinite(self.lr) and self.lr > 0, "lr", f"must be finite and > 0, got {self.lr}"
        )
        check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            f"must be finite and >= 0, got {self.weight_decay}",
        )
        check(
            0.0 <= self.warmup_fraction < 1.0,
            "warmup_fraction",
            f"must be in [0, 1), got {self.warmup_fraction}",
        )
        check(
            0.0 <= self.label_smoothing < 1.0,
            "label_smoothing",
            f"must be in [0, 1), got {self.label_smoothing}",
        )
        check(
            self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            f"must be finite and > 0, or null, got {self.grad_clip}",
        )


@dataclass
class RuntimeConfig:
    """Where and how fast training runs; none of it changes what is learned, up to
    floating-point rounding (bf16, TF32, kernel choice)."""

    device: DeviceChoice = DeviceChoice.auto
    precision: Precision = Precision.auto
    num_threads: int = 0  # 0: torch's default (under torchrun on CPU: cores / local ranks)
    compile: bool = False  # torch.compile the training forward/backward
    channels_last: bool | None = None  # null: on CUDA for models with convolutions
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)

    def __post_init__(self) -> None:
        check(self.num_threads >= 0, "num_threads", f"must be >= 0, got {self.num_threads}")
