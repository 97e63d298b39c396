"""Typed views of params.yaml, one dataclass per section.

Each stage loads only the sections it declares under `params:` in dvc.yaml.
A typo, a wrong type or a bad value fails here, before any data is touched,
with one line naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlpipe.errors import ConfigError

T = TypeVar("T")


class DataSource(str, Enum):
    fashion_mnist = "fashion_mnist"
    digits = "digits"
    imagefolder = "imagefolder"  # your own PNG/JPEG files, one sub-folder per class


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


class Severity(str, Enum):
    error = "error"
    warn = "warn"
    off = "off"


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    source: DataSource = DataSource.fashion_mnist
    path: str | None = None  # explicit folder; tried first
    debian_dir: str | None = "/usr/share/datasets/fashion-mnist"
    urls: list[str] = field(default_factory=list)
    verify_checksums: bool = True
    image_size: int = 28
    channels: int = 1
    # imagefolder: [] means the sorted sub-folder names
    class_names: list[str] = field(default_factory=list)
    val_fraction: float = 0.1  # of the train split, stratified
    test_fraction: float | None = None  # only for sources without an official test split
    split_seed: int = 42
    resize: bool = True  # imagefolder: resize other sizes to image_size (else an error)
    skip_unreadable: bool = False  # imagefolder: skip (and list) bad files instead of failing

    def __post_init__(self) -> None:
        _check(self.image_size > 0, "image_size", f"must be > 0, got {self.image_size}")
        _check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        from_folders = DataSource(self.source) is DataSource.imagefolder and not self.class_names
        _check(
            from_folders or len(self.class_names) >= 2, "class_names", "needs at least two classes"
        )
        _check(
            len(set(self.class_names)) == len(self.class_names),
            "class_names",
            "must be unique",
        )
        _check(
            0.0 < self.val_fraction < 1.0,
            "val_fraction",
            f"must be in (0, 1), got {self.val_fraction}",
        )
        if self.test_fraction is not None:
            _check(
                0.0 < self.test_fraction < 1.0,
                "test_fraction",
                f"must be in (0, 1), got {self.test_fraction}",
            )


@dataclass
class CNNConfig:
    arch: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    pool_size: int = 7  # feature grid side before the head (7 = no pooling at 28x28)
    hidden: int = 128
    dropout: float = 0.25

    def __post_init__(self) -> None:
        _check(self.pool_size > 0, "pool_size", f"must be > 0, got {self.pool_size}")
        _check(len(self.channels) >= 1, "channels", "needs at least one stage")
        _check(all(c > 0 for c in self.channels), "channels", f"must be > 0, got {self.channels}")
        _check(self.hidden > 0, "hidden", f"must be > 0, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


class ViTPool(str, Enum):
    cls = "cls"  # a learned class token, read out after the last block
    mean = "mean"  # the mean of the patch tokens


@dataclass
class ViTConfig:
    arch: str = "vit"
    image_size: int = 28  # input side in pixels; must equal data.image_size (checked at forward)
    patch_size: int = 4  # 28 / 4 -> 7x7 = 49 tokens
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0  # MLP hidden width = mlp_ratio * dim
    dropout: float = 0.1  # after the position embedding, the attention projection, the MLP
    attn_dropout: float = 0.0  # on the attention weights
    pool: ViTPool = ViTPool.cls

    def __post_init__(self) -> None:
        _check(self.image_size > 0, "image_size", f"must be > 0, got {self.image_size}")
        _check(self.patch_size > 0, "patch_size", f"must be > 0, got {self.patch_size}")
        _check(
            self.image_size % self.patch_size == 0,
            "patch_size",
            f"must divide image_size {self.image_size}, got {self.patch_size}",
        )
        _check(self.dim > 0, "dim", f"must be > 0, got {self.dim}")
        _check(self.depth > 0, "depth", f"must be > 0, got {self.depth}")
        _check(self.heads > 0, "heads", f"must be > 0, got {self.heads}")
        _check(
            self.dim % self.heads == 0,
            "heads",
            f"must divide dim {self.dim}, got {self.heads}",
        )
        _check(self.mlp_ratio > 0, "mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(
            0.0 <= self.attn_dropout < 1.0,
            "attn_dropout",
            f"must be in [0, 1), got {self.attn_dropout}",
        )


@dataclass
class ResNetConfig:
    arch: str = "resnet"
    stem_channels: int = 64
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per stage
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])  # first block of each stage
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2])  # BasicBlocks per stage
    dropout: float = 0.0  # before the linear head

    def __post_init__(self) -> None:
        _check(self.stem_channels > 0, "stem_channels", f"must be > 0, got {self.stem_channels}")
        _check(len(self.channels) >= 1, "channels", "needs at least one stage")
        _check(all(c > 0 for c in self.channels), "channels", f"must be > 0, got {self.channels}")
        for key, values in (("strides", self.strides), ("blocks", self.blocks)):
            _check(
                len(values) == len(self.channels),
                key,
                f"needs one value per stage ({len(self.channels)}), got {values}",
            )
        _check(all(s in (1, 2) for s in self.strides), "strides", f"must be 1 or 2: {self.strides}")
        _check(all(b > 0 for b in self.blocks), "blocks", f"must be > 0, got {self.blocks}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


# arch name -> its config schema; models/__init__.py maps the same names to classes
MODEL_CONFIGS: dict[str, type] = {"cnn": CNNConfig, "vit": ViTConfig, "resnet": ResNetConfig}


class ResumeMode(str, Enum):
    auto = "auto"  # resume from a matching resume checkpoint if there is one
    never = "never"  # always start over (the checkpoint is overwritten)
    must = "must"  # fail unless there is a matching checkpoint to resume


class OnBadCheckpoint(str, Enum):
    error = "error"  # a corrupt or foreign resume checkpoint stops the stage
    warn = "warn"  # ... or is ignored with a warning, and training starts over


class Monitor(str, Enum):
    val_loss = "val_loss"  # lower is better
    val_accuracy = "val_accuracy"  # higher is better


@dataclass
class AugmentConfig:
    """Train-time augmentation of raw image batches, on the device."""

    crop_padding: int = 0  # zero-pad by this many pixels, then crop back at a random offset
    hflip: bool = False  # mirror half the images left-right (not for digits or text)

    def __post_init__(self) -> None:
        _check(
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
    device: DeviceChoice = DeviceChoice.auto
    precision: Precision = Precision.auto
    num_threads: int = 0  # 0: torch's default (under torchrun on CPU: cores / local ranks)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0: off
    early_stopping_min_delta: float = 0.0  # smaller changes do not count as improvement
    early_stopping_metric: Monitor = Monitor.val_loss
    ema_decay: float | None = None  # e.g. 0.999: validate and save an EMA of the weights
    compile: bool = False  # torch.compile the training forward/backward
    channels_last: bool | None = None  # null: on CUDA for models with convolutions
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    resume: ResumeMode = ResumeMode.auto
    on_bad_checkpoint: OnBadCheckpoint = OnBadCheckpoint.error

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        _check(
            self.early_stopping_patience >= 0,
            "early_stopping_patience",
            f"must be >= 0 (0: off), got {self.early_stopping_patience}",
        )
        _check(
            math.isfinite(self.early_stopping_min_delta) and self.early_stopping_min_delta >= 0,
            "early_stopping_min_delta",
            f"must be finite and >= 0, got {self.early_stopping_min_delta}",
        )
        _check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            "ema_decay",
            f"must be in (0, 1), or null, got {self.ema_decay}",
        )
        _check(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        _check(
            math.isfinite(self.lr) and self.lr > 0, "lr", f"must be finite and > 0, got {self.lr}"
        )
        _check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            f"must be finite and >= 0, got {self.weight_decay}",
        )
        _check(
            0.0 <= self.warmup_fraction < 1.0,
            "warmup_fraction",
            f"must be in [0, 1), got {self.warmup_fraction}",
        )
        _check(
            0.0 <= self.label_smoothing < 1.0,
            "label_smoothing",
            f"must be in [0, 1), got {self.label_smoothing}",
        )
        _check(
            self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            f"must be finite and > 0, or null, got {self.grad_clip}",
        )
        _check(self.num_threads >= 0, "num_threads", f"must be >= 0, got {self.num_threads}")


@dataclass
class ValidateChecks:
    """One severity per check; the order here is the order of the report."""

    schema: Severity = Severity.error  # the table's columns
    types: Severity = Severity.error  # their dtypes
    not_null: Severity = Severity.error
    unique_ids: Severity = Severity.error
    rows: Severity = Severity.error  # split names, rows per split within `rows`
    label_set: Severity = Severity.error
    class_coverage: Severity = Severity.error  # every class in every split
    class_balance: Severity = Severity.error
    shape: Severity = Severity.error
    pixel_range: Severity = Severity.error
    blank: Severity = Severity.error  # constant images
    duplicates: Severity = Severity.error  # identical images within a split
    leakage: Severity = Severity.error  # test images identical to a train image


@dataclass
class ValidateConfig:
    checks: ValidateChecks = field(default_factory=ValidateChecks)
    pixel_min: int = 0
    pixel_max: int = 255
    # split -> [min, max] rows (max null: no bound); the keys are the splits expected
    rows: dict[str, list[int | None]] = field(
        default_factory=lambda: {"train": [1, None], "test": [1, None]}
    )
    min_class_count: int = 1  # images of each class in each split
    max_class_ratio: float = 10.0  # largest / smallest class within a split
    max_blank_fraction: float = 0.01  # of each split; blank: pixel_min == pixel_max
    max_duplicate_fraction: float = 0.01  # of each split's rows sharing their image
    max_leakage: int = 0  # test images identical to a train image

    def __post_init__(self) -> None:
        _check(
            0 <= self.pixel_min < self.pixel_max <= 255,
            "pixel_min/pixel_max",
            f"need 0 <= pixel_min < pixel_max <= 255, got {self.pixel_min}, {self.pixel_max}",
        )
        _check(bool(self.rows), "rows", "needs at least one split")
        for split, bounds in self.rows.items():
            low, high = (bounds[0], bounds[1]) if len(bounds) == 2 else (None, None)
            _check(
                low is not None and low >= 0 and (high is None or high >= low),
                f"rows.{split}",
                f"must be [min, max] with 0 <= min <= max (max null: no bound), got {bounds}",
            )
        _check(
            self.min_class_count >= 0,
            "min_class_count",
            f"must be >= 0, got {self.min_class_count}",
        )
        _check(
            math.isfinite(self.max_class_ratio) and self.max_class_ratio >= 1,
            "max_class_ratio",
            f"must be finite and >= 1, got {self.max_class_ratio}",
        )
        for key in ("max_blank_fraction", "max_duplicate_fraction"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, key, f"must be in [0, 1], got {value}")
        _check(self.max_leakage >= 0, "max_leakage", f"must be >= 0, got {self.max_leakage}")


@dataclass
class EvaluateConfig:
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")


# Test metrics (keys of reports/metrics.json, higher is better) the promotion gates read.
GATE_METRICS = ["accuracy", "macro_f1", "worst_class_recall"]


def _default_min_metrics() -> dict[str, float]:
    return {"accuracy": 0.85, "macro_f1": 0.85, "worst_class_recall": 0.5}


@dataclass
class RegisterConfig:
    model_name: str = "mlpipe-classifier"
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    metric: str = "accuracy"  # the gain over the champion is measured on this test metric
    # below any of these the version is registered but rejected: no alias
    min_metrics: dict[str, float] = field(default_factory=_default_min_metrics)
    min_improvement: float = 0.002  # absolute gain in `metric` needed over the champion
    alpha: float = 0.05  # significance level of the exact McNemar test against the champion
    auto_promote: bool = True  # false: record the gates; `mlpipe registry promote` moves it
    parity_images: int = 512  # test images the ONNX/TorchScript exports are checked on
    export_tolerance: float = 1e-4  # max absolute difference on probabilities

    def __post_init__(self) -> None:
        _check(bool(self.model_name.strip()), "model_name", "must not be empty")
        _check(
            self.challenger_alias != self.champion_alias,
            "champion_alias",
            "must differ from challenger_alias",
        )
        known = ", ".join(GATE_METRICS)
        _check(
            self.metric in GATE_METRICS, "metric", f"must be one of {known}, got {self.metric!r}"
        )
        for key, value in self.min_metrics.items():
            _check(key in GATE_METRICS, f"min_metrics.{key}", f"unknown metric (known: {known})")
            _check(0.0 <= value <= 1.0, f"min_metrics.{key}", f"must be in [0, 1], got {value}")
        _check(
            0.0 <= self.min_improvement < 1.0,
            "min_improvement",
            f"must be in [0, 1), got {self.min_improvement}",
        )
        _check(0.0 < self.alpha < 1.0, "alpha", f"must be in (0, 1), got {self.alpha}")
        _check(self.parity_images >= 2, "parity_images", f"must be >= 2, got {self.parity_images}")
        _check(
            0.0 < self.export_tolerance < 1.0,
            "export_tolerance",
            f"must be in (0, 1), got {self.export_tolerance}",
        )


@dataclass
class TrackingConfig:
    experiment: str = "mlpipe"


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "validate": ValidateConfig,
    "evaluate": EvaluateConfig,
    "register": RegisterConfig,
    "tracking": TrackingConfig,
}


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: cannot read: {detail}") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def to_dataclass(schema: type[T], values: Any, where: str) -> T:
    """Merge `values` over `schema`'s defaults and build the typed object.

    `where` prefixes every message (e.g. "params.yaml: train").
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        detail = str(exc).splitlines()[0]
        raise ConfigError(f"{where}.{key}: {detail}") from None


def load_model_config(params: dict[str, Any], where: str = "params.yaml") -> Any:
    section = params.get("model")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: missing section 'model'")
    arch = section.get("arch")
    if arch not in MODEL_CONFIGS:
        known = ", ".join(sorted(MODEL_CONFIGS))
        raise ConfigError(f"{where}: model.arch: unknown architecture {arch!r} (known: {known})")
    return to_dataclass(MODEL_CONFIGS[arch], section, f"{where}: model")


def load_section(params: dict[str, Any], name: str, where: str = "params.yaml") -> Any:
    if name == "model":
        return load_model_config(params, where)
    if name not in params:
        raise ConfigError(f"{where}: missing section {name!r}")
    return to_dataclass(SECTIONS[name], params[name], f"{where}: {name}")


def load_sections(path: str | Path, names: list[str]) -> dict[str, Any]:
    """Read params.yaml and load just `names`, each into its dataclass."""
    params = read_params(path)
    return {name: load_section(params, name, str(path)) for name in names}
