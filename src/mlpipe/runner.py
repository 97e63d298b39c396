"""How an entry point runs (pipelines/<stage>.py, the bench): logging set up once,
a user error printed as one line, exit code 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mlpipe.errors import MlpipeError


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_stage(stage: str, body: Callable[[], None]) -> int:
    """Run a stage body; a user error becomes one line on stderr and exit code 1."""
    configure_logging()
    try:
        body()
    except MlpipeError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0
