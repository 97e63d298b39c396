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
    class_names: list[str] = field(default_factory=list)
    val_fraction: float = 0.1  # of the train split, stratified
    test_fraction: float | None = None  # only for sources without an official test split
    split_seed: int = 42

    def __post_init__(self) -> None:
        _check(self.image_size > 0, "image_size", f"must be > 0, got {self.image_size}")
        _check(self.channels in (1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        _check(len(self.class_names) >= 2, "class_names", "needs at least two classes")
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


# arch name -> its config schema; models/__init__.py maps the same names to classes
MODEL_CONFIGS: dict[str, type] = {"cnn": CNNConfig}


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
    num_threads: int = 0  # 0: leave torch's default

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
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
    schema: Severity = Severity.error
    not_null: Severity = Severity.error
    label_set: Severity = Severity.error
    shape: Severity = Severity.error
    pixel_range: Severity = Severity.error


@dataclass
class ValidateConfig:
    checks: ValidateChecks = field(default_factory=ValidateChecks)
    pixel_min: int = 0
    pixel_max: int = 255

    def __post_init__(self) -> None:
        _check(
            0 <= self.pixel_min < self.pixel_max <= 255,
            "pixel_min/pixel_max",
            f"need 0 <= pixel_min < pixel_max <= 255, got {self.pixel_min}, {self.pixel_max}",
        )


@dataclass
class EvaluateConfig:
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")


@dataclass
class RegisterConfig:
    model_name: str = "mlpipe-classifier"
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        _check(bool(self.model_name.strip()), "model_name", "must not be empty")
        _check(
            self.challenger_alias != self.champion_alias,
            "champion_alias",
            "must differ from challenger_alias",
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
