"""params.yaml from conf/: composed exactly as `dvc exp run -S ...` composes it, and a bad
override explained in one line.

`dvc exp run` composes before any project code runs, and would report an unknown key or config
group as a multi-line "unexpected error - Could not override ...". `explain` says in one line
what is wrong and what is valid: inside `dvc exp run` through hydra_plugins/mlpipe_overrides.py,
and in `mlpipe params --check`, which composes the same overrides here (sweeps expanded as DVC
expands them) before a run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mlpipe.errors import ConfigError, first_line

CONFIG_NAME = "config"  # conf/config.yaml
PARAMS_FILE = "params.yaml"
ComposeTree = Callable[[list[str]], Any]  # overrides -> the composition as plain data


def compose(repo_root: Path, overrides: list[str] | None = None) -> str:
    """The YAML text `dvc exp run` would write to params.yaml for these overrides.

    Raises Hydra's own exceptions; `compose_checked` turns them into one line.
    """
    # DVC's own function, so `make params` and `dvc exp run` cannot drift apart.
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / PARAMS_FILE
        compose_and_dump(
            out,
            str((repo_root / "conf").resolve()),
            None,
            CONFIG_NAME,
            str(repo_root),  # where DVC looks: hydra_plugins/ at the repo root
            list(overrides or []),
        )
        return out.read_text(encoding="utf-8")


def compose_checked(repo_root: Path, overrides: list[str]) -> str:
    """`compose`, with any override problem as a one-line ConfigError."""
    from hydra.errors import HydraException

    try:
        return compose(repo_root, overrides)
    except HydraException as exc:

        def tree(others: list[str]) -> Any:
            return yaml.safe_load(compose(repo_root, others))

        raise ConfigError(explain(exc, overrides, tree)) from None


def explain(exc: BaseException, overrides: list[str], compose_tree: ComposeTree) -> str:
    """One line for a Hydra composition error: the key or option, and what is valid there.

    `compose_tree(overrides)` composes other overrides (to list the keys a parent has).
    Also used by hydra_plugins/mlpipe_overrides.py, inside `dvc exp run`.
    """
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException):
        return _missing_option(exc)
    key = getattr(exc.__cause__, "full_key", None)
    if key:
        others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        return _unknown_key(key, others, compose_tree)
    return _one_line(exc)


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """One list of overrides per experiment, as `dvc exp run --queue` splits a sweep."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    for override in overrides:
        try:
            get_hydra_sweeps({PARAMS_FILE: [override]})
        except (HydraException, DvcException) as exc:
            raise ConfigError(f"override {override!r}: {_one_line(exc)}") from None
    sweeps = get_hydra_sweeps({PARAMS_FILE: overrides})
    return [list(sweep[PARAMS_FILE]) for sweep in sweeps]


def _one_line(exc: BaseException) -> str:
    cause = f": {first_line(exc.__cause__)}" if exc.__cause__ else ""
    return f"{first_line(exc).rstrip('.')}{cause}"


def _missing_option(exc: Any) -> str:
    """`model=nosuch`: the group and its options."""
    group, _, option = (exc.missing_cfg_file or "").rpartition("/")
    if not group or exc.options is None:
        return _one_line(exc)
    options = ", ".join(sorted(exc.options))
    return f"{group}={option}: no option {option!r} in config group {group!r} (options: {options})"


def _unknown_key(key: str, others: list[str], compose_tree: ComposeTree) -> str:
    """`train.epoch=3`: the keys its parent has, composed with the other overrides."""
    from hydra.errors import HydraException

    parent, _, name = key.rpartition(".")
    try:
        node = compose_tree(others)
    except HydraException:  # another override is bad too: name this one only
        node = None
    for part in filter(None, parent.split(".")):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return f"{key}: no such key"
    keys = ", ".join(str(k) for k in node if parent or k != "hydra")  # hydra: Hydra's own node
    where = f"in {parent}" if parent else "at the top level"
    return f"{key}: no key {name!r} {where} (keys: {keys})"


def differing_keys(params: Any, composed: Any) -> list[str]:
    """Dotted keys whose values differ between two params trees (present in one only too)."""
    from mlpipe.config import flatten

    ours, theirs = flatten(params or {}), flatten(composed or {})
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def stale_message(params_file: Path, keys: list[str], params: Any, composed: Any) -> str:
    """One line: which keys of params.yaml disagree with conf/, and the fix."""
    from mlpipe.config import flatten

    ours, theirs = flatten(params or {}), flatten(composed or {})
    shown = ", ".join(
        f"{k} ({ours.get(k, '<absent>')} here, {theirs.get(k, '<absent>')} in conf/)"
        for k in keys[:3]
    )
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return (
        f"{params_file} does not match conf/: {shown}{more}. It is generated: run `make params` "
        "to compose it from conf/, or `dvc exp run -S key=value` to run with overrides"
    )


def check_fresh(repo_root: Path, params_file: Path) -> None:
    """Refuse a params.yaml that is not the composition of conf/ (plain `dvc repro` after an
    edit in conf/). `dvc exp run` composes params.yaml itself, with its -S overrides, so the
    caller skips this inside experiments."""
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    composed = yaml.safe_load(compose_checked(repo_root, []))
    keys = differing_keys(params, composed)
    if keys:
        raise ConfigError(stale_message(params_file, keys, params, composed))
