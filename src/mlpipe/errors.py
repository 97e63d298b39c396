"""Errors a user can act on. Entry points print them as one line and exit 1."""

import re

# scheme://user:password@host: a password in a store or remote URL (MLFLOW_TRACKING_URI
# may hold one) must never reach a terminal, a log or a report.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^/@\s:]*):[^/@\s]+@")


class MlpipeError(Exception):
    """Base class: the message is complete and names the file, key or value."""


class ConfigError(MlpipeError):
    """A wrong key, type or value in params.yaml."""


class DataError(MlpipeError):
    """Missing, unreadable or malformed input data."""


class ValidationFailed(MlpipeError):
    """The data failed expectations of severity `error`."""


class TrackingError(MlpipeError):
    """MLflow store or registry problems the user can fix."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, for one-line messages (its type if it has no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` in it hidden."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
