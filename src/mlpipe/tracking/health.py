"""Is the tracking store reachable? Checked when train starts, so a long training never dies
at the logging step (issue 12). Plain HTTP, a few seconds at most: MLflow's own client retries
an unreachable server for minutes."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request

from mlpipe.errors import TrackingError, redact

LOCAL_SCHEMES = {"", "file", "sqlite", "postgresql", "mysql", "mssql"}
HTTP_SCHEMES = {"http", "https"}
FIX = "start it (make stack-up; source .stack/env) or fix MLFLOW_TRACKING_URI"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError (one line naming the redacted URI and the fix) unless `uri` answers."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    if scheme in LOCAL_SCHEMES or scheme == "databricks":
        return
    shown = redact(uri)
    if scheme not in HTTP_SCHEMES:
        raise TrackingError(
            f"MLFLOW_TRACKING_URI {shown} has an unsupported scheme {scheme!r}: "
            "use http(s)://host:port for a tracking server, or sqlite:///path"
        )
    url, credentials = _split_credentials(uri)
    request = urllib.request.Request(url + "/api/2.0/mlflow/experiments/search?max_results=1")
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise TrackingError(
                f"tracking server {shown} answered 401 (login required): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if exc.code == 403:
            raise TrackingError(
                f"tracking server {shown} answered 403 (forbidden): check the user's "
                "permissions, or start the server with --allowed-hosts <this host name>"
            ) from None
        raise TrackingError(f"tracking server {shown} answered HTTP {exc.code}: {FIX}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"tracking server {shown} is unreachable ({reason}): {FIX}") from None


def _split_credentials(uri: str) -> tuple[str, tuple[str, str] | None]:
    """The URI without `user:password@`, and the login MLflow's client would send:
    MLFLOW_TRACKING_USERNAME/PASSWORD when set, else the URI's own (requests' rule)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user is not None:
        return bare, (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    if parts.username is not None:
        password = urllib.parse.unquote(parts.password or "")
        return bare, (urllib.parse.unquote(parts.username), password)
    return bare, None
