"""The best trial as a named combination in conf/experiment/, for the normal pipeline:

    mlpipe tune apply --study NAME           # writes conf/experiment/tuned.yaml
    dvc exp run -S experiment=tuned          # trains, evaluates, registers through the gates

The file holds the trial's overrides exactly (the space's `fixed` ones included), so the
pipeline composes the same params the trial trained with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mlpipe.errors import ConfigError
from mlpipe.io import atomic_write_text

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def experiment_yaml(overrides: list[str], groups: set[str], header: list[str]) -> str:
    """`key=value` and `group=option` overrides as a `# @package _global_` config."""
    defaults: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.lstrip("+")
        if key in groups:
            defaults.append({f"override /{key}": text})
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    body: dict[str, Any] = ({"defaults": defaults} if defaults else {}) | values
    lines = ["# @package _global_", *(f"# {h}" for h in header)]
    dumped: str = yaml.safe_dump(body, sort_keys=False)
    return "\n".join(lines) + "\n" + dumped


def write_experiment(conf: Path, name: str, text: str) -> Path:
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name: {name!r} is not a usable option name (letters, digits, _ . -)")
    path = conf / "experiment" / f"{name}.yaml"
    atomic_write_text(path, text)
    return path
