"""params.yaml: composed from conf/, read, and loaded section by section into dataclasses.

Each stage declares the sections it reads (`SECTIONS` in `pipelines/<stage>.py`, the
same names as its `params:` in dvc.yaml), each with its schema: a dataclass that lives
beside the code it configures (`mlpipe.train.config.TrainConfig`, ...). A typo, a wrong
type or a bad value fails here, before any data is touched, with one line naming the
file and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from mlpipe.errors import ConfigError

T = TypeVar("T")
# A section's schema: its dataclass, or a function that picks the dataclass from the
# section's values (the model section: `arch` names the architecture's schema).
Schema = type | Callable[[dict[str, Any]], type]


def check(condition: bool, key: str, message: str) -> None:
    """For `__post_init__` checks: a ConfigError naming the key (the caller adds the section)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


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
        owner = getattr(exc, "object_type", None)
        if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(owner):
            detail += f" (keys: {', '.join(f.name for f in dataclasses.fields(owner))})"
        raise ConfigError(f"{where}.{key}: {detail}") from None


def load_section(
    params: dict[str, Any], name: str, schema: Schema, where: str = "params.yaml"
) -> Any:
    """`params[name]` as its dataclass; a missing section or a bad value names the key."""
    if name not in params:
        raise ConfigError(f"{where}: missing section {name!r}")
    values = params[name]
    if not isinstance(schema, type):
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {name}: expected a mapping, got {type(values).__name__}")
        try:
            schema = schema(values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {name}.{exc}") from None
    return to_dataclass(schema, values, f"{where}: {name}")


def load_sections(path: str | Path, schemas: Mapping[str, Schema]) -> dict[str, Any]:
    """Read params.yaml and load just the sections in `schemas`, each into its dataclass."""
    params = read_params(path)
    return {name: load_section(params, name, schema, str(path)) for name, schema in schemas.items()}


def _as_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def flatten(
    tree: Mapping[str, Any], prefix: str = "", render: Callable[[Any], str] = _as_text
) -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}; lists stay one value, Enums by value."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}.", render))
        else:
            flat[name] = render(value)
    return flat


def plain(value: Any) -> Any:
    """Enums to their values, recursively: for JSON and torch.load(weights_only=True)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return getattr(value, "value", value)
