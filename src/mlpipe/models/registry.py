"""Architectures by name. Each model file registers its class with its config schema:

    @register("cnn", CNNConfig)
    class CNN(nn.Module): ...

so the name `model.arch` takes in params.yaml, the schema that section is loaded into and
the class that is built are declared once, side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from mlpipe.errors import ConfigError

M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class Architecture:
    name: str
    config: type  # the dataclass `model:` is loaded into; its `arch` field is `name`
    module: type[nn.Module]  # built as module(config, in_channels, num_classes)


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, config: type) -> Callable[[M], M]:
    def add(module: M) -> M:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        if getattr(config(), "arch", None) != name:
            raise ValueError(f"{config.__name__}.arch must default to {name!r}")
        ARCHITECTURES[name] = Architecture(name, config, module)
        return module

    return add


def schema_for(section: dict[str, Any]) -> type:
    """The config dataclass of the architecture that `section["arch"]` names."""
    arch = section.get("arch")
    if arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(f"arch: unknown architecture {arch!r} (known: {known})")
    return ARCHITECTURES[arch].config
