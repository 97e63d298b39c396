"""How an entry point runs (pipelines/<stage>.py, the bench): logging set up once,
a user error printed as one line, exit code 1; credentials in URLs never printed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mlpipe.errors import MlpipeError, redact


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then hides `user:password@` in any URL of the line."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr)
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def error_line(prog: str, exc: BaseException) -> str:
    """The one line a user error prints: `<prog>: error: <message>`, credentials hidden."""
    return redact(f"{prog}: error: {exc}")


def run_stage(stage: str, body: Callable[[], None]) -> int:
    """Run a stage body; a user error becomes one line on stderr and exit code 1."""
    configure_logging()
    try:
        body()
    except MlpipeError as exc:
        print(error_line(stage, exc), file=sys.stderr)
        return 1
    return 0
