"""The tracking store check at train start (issue 12): one line naming the redacted URI and
the fix, for an unreachable server, 401, 403 and a bad scheme."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from mlpipe.errors import TrackingError
from mlpipe.tracking.health import check_reachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[str, list[int], list[str | None]]]:
    """A tiny HTTP server answering the status code in codes[0]; `seen`: the Authorization
    header of each request."""
    codes = [200]
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(codes[0])
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", codes, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_local_stores_are_not_probed() -> None:
    check_reachable("sqlite:////nonexistent/mlflow.db")
    check_reachable("/some/mlruns")


def test_reachable_server_passes(server: tuple[str, list[int], list[str | None]]) -> None:
    check_reachable(server[0])


def test_unreachable_server_names_the_uri_redacted_and_the_fix() -> None:
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as err:
        check_reachable(uri, timeout=2)
    msg = str(err.value)
    assert "unreachable" in msg and "alice:***@127.0.0.1" in msg and "s3cret" not in msg
    assert "make stack-up" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("code", "words"),
    [(401, "MLFLOW_TRACKING_USERNAME"), (403, "--allowed-hosts"), (500, "HTTP 500")],
)
def test_error_answers_say_what_to_do(
    server: tuple[str, list[int], list[str | None]], code: int, words: str
) -> None:
    uri, codes, _ = server
    codes[0] = code
    with pytest.raises(TrackingError, match=words) as err:
        check_reachable(uri)
    assert uri in str(err.value) and "\n" not in str(err.value)


def test_credentials_from_the_environment_are_sent(
    server: tuple[str, list[int], list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    check_reachable(server[0])
    assert server[2] == ["Basic " + base64.b64encode(b"bob:pw").decode()]


def test_credentials_in_the_uri_are_sent_as_a_login(
    server: tuple[str, list[int], list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As MLflow's client (requests) does with http://user:password@host: the check must not
    take `user:password@host` for a host name."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    uri, _, seen = server
    check_reachable(uri.replace("http://", "http://alice:p%40ss@"))
    assert seen == ["Basic " + base64.b64encode(b"alice:p@ss").decode()]


def test_bad_scheme() -> None:
    with pytest.raises(TrackingError, match="unsupported scheme 'htp'"):
        check_reachable("htp://127.0.0.1:5000")
