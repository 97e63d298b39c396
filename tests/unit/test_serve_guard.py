"""The scoring server's guard as a plain ASGI app around a fake MLflow app (no server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from mlpipe.tracking.guard import RequestGuard, RequestLimits

SHAPE = (1, 4, 4)
LIMITS = RequestLimits(SHAPE, max_batch=8)
JSON = [(b"content-type", b"application/json")]
SECRET = "s3cr3t-pixels"


class FakeMlflow:
    """Records what reached it; answers 200, or `status` with an MLflow-style error."""

    def __init__(self, status: int = 200, message: str = "") -> None:
        self.bodies: list[bytes] = []
        self.status, self.message = status, message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            msg = await receive()
            body, more = body + msg.get("body", b""), msg.get("more_body", False)
        self.bodies.append(body)
        answer = b'{"predictions": []}'
        if self.status >= 400:
            answer = json.dumps({"error_code": "BAD_REQUEST", "message": self.message}).encode()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": answer[:10], "more_body": True})
        await send({"type": "http.response.body", "body": answer[10:], "more_body": False})


def call(
    app: Any,
    body: bytes | list[bytes],
    headers: list[tuple[bytes, bytes]] = JSON,
    path: str = "/invocations",
    method: str = "POST",
) -> tuple[int, dict[bytes, bytes], Any, int]:
    """Status, headers, decoded answer and how many body chunks the app read."""
    chunks = [body] if isinstance(body, bytes) else body
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[reads - 1], "more_body": reads < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    raw = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(raw), reads


def images(n: int = 2, value: Any = 7) -> list[Any]:
    return np.full((n, *SHAPE), value).tolist()


def body(inputs: Any, key: str = "inputs") -> bytes:
    return json.dumps({key: inputs}).encode()


def rejected(status: int, payload: bytes, headers: list[tuple[bytes, bytes]] = JSON) -> str:
    inner = FakeMlflow()
    got, _, answer, _ = call(RequestGuard(inner, LIMITS), payload, headers)
    assert got == status, answer
    assert inner.bodies == []  # MLflow never saw it
    assert set(answer) == {"error_code", "message"}
    assert "\n" not in answer["message"] and len(answer["message"]) < 300
    return str(answer["message"])


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_a_valid_batch_reaches_mlflow_unchanged(key: str) -> None:
    inner = FakeMlflow()
    payload = body(np.arange(2 * 16).reshape(2, *SHAPE).tolist(), key)
    status, _, answer, _ = call(RequestGuard(inner, LIMITS), payload)
    assert (status, answer) == (200, {"predictions": []})
    assert inner.bodies == [payload]


def test_whole_number_floats_and_a_utf8_charset_pass() -> None:
    inner = FakeMlflow()
    headers = [(b"content-type", b"application/json; charset=utf-8")]
    status, *_ = call(RequestGuard(inner, LIMITS), body(images(value=16.0)), headers)
    assert status == 200 and len(inner.bodies) == 1


def test_other_routes_pass_through() -> None:
    inner = FakeMlflow()
    guard = RequestGuard(inner, LIMITS)
    assert call(guard, b"", [], path="/ping", method="GET")[0] == 200
    assert call(guard, b"x", [], path="/other")[0] == 200
    assert inner.bodies == [b"", b"x"]


@pytest.mark.parametrize(
    "headers", [[], [(b"content-type", b"text/csv")], [(b"content-type", b"text/plain")],
                [(b"content-type", b"application/json; charset=latin-1")]],
)  # fmt: skip
def test_a_missing_or_wrong_content_type_gets_415(headers: list[tuple[bytes, bytes]]) -> None:
    assert "application/json" in rejected(415, body(images()), headers)


@pytest.mark.parametrize("value", [0.5, 0.0039, 127.5])
def test_fractional_pixels_get_400_naming_the_dtype_and_range(value: float) -> None:
    message = rejected(400, body(images(value=value)))
    assert "integers 0..255 (uint8 pixels)" in message
    assert f"got {value:g}" in message


def test_images_scaled_to_one_get_a_hint() -> None:
    assert "scaled to 0..1" in rejected(400, body((np.full((2, *SHAPE), 0.2)).tolist()))


@pytest.mark.parametrize("inputs", [images(value=True), [[[[1, True, 2, 3]] * 4]] * 2])
def test_booleans_get_400(inputs: Any) -> None:
    message = rejected(400, body(inputs))
    assert "integers 0..255" in message and "booleans" in message


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (images(value="x"), "strings, null or objects"),
        (images(value=None), "strings, null or objects"),
        (images(value=256), "got 256..256"),
        (images(value=-1), "got -1..-1"),
        (images(value=float("nan")), "got nan"),
        (np.full((2, 1, 4, 4), 2**70).tolist(), "strings, null or objects"),
    ],
)
def test_values_that_are_not_pixels_get_400(inputs: Any, words: str) -> None:
    message = rejected(400, body(inputs))
    assert "integers 0..255" in message and words in message


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (body([[images()]]), "nested deeper than images (N, 1, 4, 4)"),
        (body(np.zeros((2, 1, 4, 4, 1), int).tolist()), "nested deeper than images"),
        (b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested too deeply"),
        (body(images()[0]), "must have shape (N, 1, 4, 4), got (1, 4, 4)"),
        (body([images()[0], images()[0][0]]), "must have shape (N, 1, 4, 4)"),
        (body([[[[1, [2], 3, 4]] * 4]]), "must have shape (N, 1, 4, 4)"),
        (body([]), "no images"),
        (body({"x": images()}), "no images"),
        (b"", "not valid JSON"),
        (b"{images:", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"images": images()}).encode(), 'expected {"inputs": [...]}'),
        (json.dumps({"inputs": images(), "params": {}}).encode(), 'expected {"inputs"'),
        (json.dumps({"dataframe_split": {}}).encode(), 'expected {"inputs"'),
    ],
)  # fmt: skip
def test_malformed_bodies_get_400(payload: bytes, words: str) -> None:
    assert words in rejected(400, payload)


def test_a_content_length_over_the_limit_gets_413_before_reading() -> None:
    inner = FakeMlflow()
    headers = [*JSON, (b"content-length", str(LIMITS.max_bytes + 1).encode())]
    status, answer_headers, answer, reads = call(RequestGuard(inner, LIMITS), b"{}", headers)
    assert (status, reads, inner.bodies) == (413, 0, [])
    assert answer_headers[b"connection"] == b"close"
    assert f"over {LIMITS.max_bytes} bytes" in answer["message"]


def test_a_streamed_body_over_the_limit_stops_being_read() -> None:
    inner = FakeMlflow()
    chunk = (SECRET * 1000).encode()
    chunks = [chunk] * (3 * LIMITS.max_bytes // len(chunk))
    status, _, answer, reads = call(RequestGuard(inner, LIMITS), chunks)
    assert (status, inner.bodies) == (413, [])
    assert reads == LIMITS.max_bytes // len(chunk) + 1  # the first chunk past the limit
    assert SECRET not in json.dumps(answer)


def test_more_images_than_the_batch_limit_get_413() -> None:
    message = rejected(413, body(images(LIMITS.max_batch + 1)))
    assert f"at most {LIMITS.max_batch} per request" in message


def test_the_limit_fits_a_full_batch_of_compact_json() -> None:
    limits = RequestLimits((1, 28, 28))
    assert limits.max_bytes == 1024 * 784 * 6 + 64 * 1024
    widest = json.dumps({"inputs": np.full((1024, 1, 28, 28), 255).tolist()}).encode()
    assert len(widest) < limits.max_bytes


def test_errors_never_echo_the_body() -> None:
    junk = (SECRET + "{").encode() * 1000
    for payload in (junk, body(images(value=SECRET)), body([[[[SECRET]]]])):
        assert SECRET not in rejected(400, payload)


def test_mlflow_errors_are_cut_to_their_reason() -> None:
    echo = "Failed to predict data '" + SECRET * 10_000 + "'. \nError: dtype went wrong\n trace"
    inner = FakeMlflow(400, echo)
    status, headers, answer, _ = call(RequestGuard(inner, LIMITS), body(images()))
    assert (status, answer) == (400, {"error_code": "BAD_REQUEST", "message": "dtype went wrong"})
    assert int(headers[b"content-length"]) < 200


def test_large_bodies_are_checked_in_a_thread_with_the_same_answers() -> None:
    limits = RequestLimits((1, 28, 28))
    batch = np.random.default_rng(0).integers(0, 256, (100, 1, 28, 28))
    inner = FakeMlflow()
    payload = body(batch.tolist())
    assert len(payload) > 64 * 1024
    assert call(RequestGuard(inner, limits), payload)[0] == 200
    assert inner.bodies == [payload]
    status, _, answer, _ = call(RequestGuard(inner, limits), body((batch / 255).tolist()))
    assert status == 400 and "scaled to 0..1" in answer["message"]
    assert len(inner.bodies) == 1
