"""A search space (conf/tune/<name>.yaml) read and checked before any trial starts.

Every problem is one line naming the file and the key: an unknown key, an empty range, a
categorical over a config-group option that does not exist, an objective that is not a
validation metric. Keys are checked by composing params.yaml with each candidate override
(mlpipe.compose, as `dvc exp run -S` would), so what a trial gets is what the pipeline
would get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlpipe.errors import ConfigError

TUNABLE_SECTIONS = ("model", "train", "runtime")  # what a trial trains with
OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize"}  # EpochStats fields
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
TYPES = ("float", "int", "categorical")
MINIMUM = {
    "trials": 1,
    "startup_trials": 0,
    "warmup_epochs": 0,
    "seed": 0,
    "heartbeat_s": 1,
    "grace_s": 1,
}


@dataclass(frozen=True)
class Dimension:
    key: str  # a params.yaml key (`train.lr`) or a config group (`model`)
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def override(self, value: Any) -> str:
        """The `-S` override that sets this dimension to `value`."""
        return f"{self.key}={_yaml_value(value)}"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    source: Path
    dimensions: tuple[Dimension, ...]
    objective: str = "val_accuracy"
    trials: int = 20
    timeout_s: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    startup_trials: int = 3
    warmup_epochs: int = 1
    fixed: tuple[str, ...] = ()
    heartbeat_s: int = 10  # a killed worker's trial is failed about grace_s after it stops
    grace_s: int = 30
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """fixed, then one override per dimension, in the space's order."""
        by_key = {d.key: d for d in self.dimensions}
        return [*self.fixed, *(by_key[k].override(v) for k, v in params.items())]


def space_path(repo_root: Path, space: str) -> Path:
    """`default` -> conf/tune/default.yaml; a path to a YAML file is taken as it is."""
    path = Path(space)
    if path.suffix in (".yaml", ".yml"):
        return path if path.is_absolute() else repo_root / path
    return repo_root / "conf" / "tune" / f"{space}.yaml"


def load_space(repo_root: Path, space: str) -> SearchSpace:
    path = space_path(repo_root, space)
    if not path.is_file():
        known = sorted(p.stem for p in (repo_root / "conf" / "tune").glob("*.yaml"))
        raise ConfigError(f"{path}: no such search space (known: {', '.join(known) or 'none'})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_space(raw, path)


def parse_space(raw: Any, path: Path) -> SearchSpace:
    """The space, or a ConfigError naming `path` and the key (no composition: see `check`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with `space:` and `objective:`")
    known = set(SearchSpace.__dataclass_fields__) - {"name", "source", "dimensions", "extra"}
    unknown = sorted(set(raw) - known - {"space"})
    if unknown:
        raise ConfigError(
            f"{path}: {unknown[0]}: unknown setting (known: {', '.join(sorted(known | {'space'}))})"
        )
    objective = str(raw.get("objective", "val_accuracy"))
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"{path}: objective: {objective!r} is not a validation metric "
            f"({' or '.join(OBJECTIVES)}; the test set is kept for the pipeline's gates)"
        )
    _one_of(path, "sampler", raw.get("sampler", "tpe"), SAMPLERS)
    _one_of(path, "pruner", raw.get("pruner", "median"), PRUNERS)
    for key in MINIMUM:
        if key in raw and (not isinstance(raw[key], int) or raw[key] < MINIMUM[key]):
            raise ConfigError(
                f"{path}: {key}: must be a whole number >= {MINIMUM[key]}, got {raw[key]!r}"
            )
    timeout = raw.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"{path}: timeout_s: must be > 0 seconds or null, got {timeout!r}")
    fixed = raw.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise ConfigError(f"{path}: fixed: must be a list of overrides such as train.epochs=3")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{path}: space: must map params keys to ranges, e.g. "
            "train.lr: {type: float, low: 0.001, high: 0.1, log: true}"
        )
    dims = tuple(_dimension(path, str(k), v) for k, v in space.items())
    settings = {k: raw[k] for k in known if k in raw and k != "fixed"}
    return SearchSpace(path.stem, path, dims, **settings, fixed=tuple(fixed))


def _one_of(path: Path, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: {key}: must be one of {', '.join(allowed)}, got {value!r}")


def _dimension(path: Path, key: str, spec: Any) -> Dimension:
    where = f"{path}: space.{key}"
    section = key.split(".")[0]
    if section not in TUNABLE_SECTIONS:
        raise ConfigError(
            f"{where}: only {', '.join(TUNABLE_SECTIONS)} keys can be searched (data and "
            "preprocess are fixed by the pipeline's processed data)"
        )
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ConfigError(f"{where}: needs type: {' | '.join(TYPES)}")
    kind = spec["type"]
    allowed = (
        {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    )
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: {extra[0]}: not a setting of a {kind} range ({', '.join(sorted(allowed))})"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices: must be a non-empty list")
        return Dimension(key, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    number = int if kind == "int" else (int, float)
    if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool):
        raise ConfigError(f"{where}: low and high must be {kind} numbers, got {low!r} and {high!r}")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{where}: empty range: low {low} must be below high {high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (log or not isinstance(step, number) or step <= 0):
        raise ConfigError(f"{where}: step: must be > 0 and not combined with log, got {step!r}")
    return Dimension(key, kind, float(low) if kind == "float" else low, high, log, step)


def check(space: SearchSpace, compose_params: Any) -> None:
    """Every override a trial could get must compose and name an existing key.

    `compose_params(overrides) -> dict` composes params.yaml (raising ConfigError with
    the one-line reason). Each categorical choice and each range's ends are tried.
    """
    base = compose_params(list(space.fixed))
    for dim in space.dimensions:
        if dim.type != "categorical" and not _has_key(base, dim.key):
            raise ConfigError(f"{space.source}: space.{dim.key}: no such key in params.yaml")
        values = dim.choices if dim.type == "categorical" else (dim.low, dim.high)
        for value in values:
            try:
                composed = compose_params([*space.fixed, dim.override(value)])
            except ConfigError as exc:
                raise ConfigError(f"{space.source}: space.{dim.key}: {value!r}: {exc}") from None
            if "." in dim.key and not _has_key(composed, dim.key):
                raise ConfigError(f"{space.source}: space.{dim.key}: no such key in params.yaml")


def _has_key(params: dict[str, Any], key: str) -> bool:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _yaml_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
