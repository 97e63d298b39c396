"""One line for a bad `-S` override of `dvc exp run`, naming the key or option and what is valid.

DVC composes conf/ itself, before any project code runs, and prints Hydra's errors as a
multi-line "unexpected error". Its only way in is this folder: DVC (like Hydra) imports the
modules of `hydra_plugins/` at the repo root before composing. Hydra has no hook for errors,
so this module wraps `ConfigLoaderImpl.load_configuration` (private Hydra API, hydra-core
1.3) and re-raises its errors as one that is both Hydra's and DVC's InvalidArgumentError,
which DVC prints as one line: `ERROR: train.epoch: no key 'epoch' in train (keys: ...)`.
The text comes from `mlpipe.compose.explain`, as for `mlpipe params --check`. Where Hydra,
DVC or mlpipe is not what this expects, it changes nothing and DVC's own message stays.
tests/integration/test_pipeline_e2e.py runs `dvc exp run` with a bad override.
"""

from __future__ import annotations

import functools
from typing import Any


def _install() -> None:
    try:
        from dvc.exceptions import InvalidArgumentError
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import ConfigCompositionException, HydraException
        from omegaconf import OmegaConf

        from mlpipe.compose import explain
    except ImportError:  # not this project's DVC environment: leave Hydra as it is
        return
    load = getattr(ConfigLoaderImpl, "load_configuration", None)
    if load is None or getattr(load, "mlpipe_one_line", False):
        return  # not hydra-core 1.3's loader, or wrapped already (Hydra's scan reruns modules)

    class OverrideError(InvalidArgumentError, ConfigCompositionException):  # type: ignore[misc]
        """DVC prints a DvcException as one line; Hydra's callers still catch it as theirs."""

    @functools.wraps(load)
    def load_configuration(
        self: Any, config_name: Any, overrides: list[str], *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return load(self, config_name, overrides, *args, **kwargs)
        except HydraException as exc:

            def tree(others: list[str]) -> Any:
                return OmegaConf.to_container(load(self, config_name, others, *args, **kwargs))

            raise OverrideError(explain(exc, list(overrides), tree)) from None

    load_configuration.mlpipe_one_line = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]


_install()
