"""The scoring server's front door: an ASGI middleware that checks `POST /invocations`
before MLflow sees it.

MLflow's scoring server casts a request to the signature's dtype (0.5 becomes 0, status
200), answers 500 to a missing Content-Type or deeply nested JSON, reads any body however
large, and echoes the whole body back in some errors. This guard answers instead:

- 415: a Content-Type other than application/json (missing included);
- 413: a body over `RequestLimits.max_bytes` (Content-Length up front, else while reading:
  reading stops at the limit) or a batch of more than `max_batch` images;
- 400: not JSON, not `{"inputs": [...]}` (or "instances"), nesting deeper or shallower
  than images (N, C, H, W), and any value that is not an integer 0..255 (floats such as
  0.5, booleans, strings, null).

Errors are MLflow-shaped JSON (`error_code`, `message`), one short line that never quotes
the body; MLflow's own error answers are cut the same way. Valid requests reach MLflow
unchanged. Pure: numpy and the standard library, no server; see tracking/server.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpipe.tracking.capture import RequestSampler

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PIXEL_MAX = 255
MAX_BATCH = 1024  # images per request
BYTES_PER_VALUE = 6  # "255, " plus brackets, in compact JSON
SLACK_BYTES = 64 * 1024
THREAD_BYTES = 64 * 1024  # larger bodies are checked in a worker thread
MAX_MESSAGE = 300  # characters of an error message passed on from MLflow
JSON_TYPE = "application/json"
EXPECTED = f"integers 0..{PIXEL_MAX} (uint8 pixels)"


@dataclass(frozen=True)
class RequestLimits:
    image_shape: tuple[int, int, int]  # (C, H, W)
    max_batch: int = MAX_BATCH

    @property
    def max_bytes(self) -> int:
        c, h, w = self.image_shape
        return self.max_batch * c * h * w * BYTES_PER_VALUE + SLACK_BYTES

    @property
    def shape_text(self) -> str:
        return "(N, " + ", ".join(map(str, self.image_shape)) + ")"


class Rejection(Exception):
    """An answer to the client: status, MLflow error code, one line."""

    def __init__(self, status: int, message: str, code: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def check_content_type(value: bytes | None) -> None:
    if value is None:
        raise Rejection(415, f"no Content-Type: send JSON with Content-Type: {JSON_TYPE}")
    mime, _, params = value.decode("latin-1").partition(";")
    if mime.strip().lower() != JSON_TYPE:
        shown = mime.strip()[:60]
        raise Rejection(415, f"Content-Type {shown!r} is not supported: send {JSON_TYPE}")
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise Rejection(415, f"only {JSON_TYPE} in UTF-8 is supported")


def check_length(value: bytes | None, limits: RequestLimits) -> None:
    if value is None:
        return
    try:
        length = int(value)
    except ValueError:
        raise Rejection(400, "Content-Length is not a number", "BAD_REQUEST") from None
    if length > limits.max_bytes:
        raise too_large(limits)


def too_large(limits: RequestLimits) -> Rejection:
    return Rejection(
        413,
        f"the body is over {limits.max_bytes} bytes: send at most {limits.max_batch} "
        f"images {limits.shape_text} per request, as compact JSON",
        "RESOURCE_LIMIT_EXCEEDED",
    )


def parse_images(body: bytes, limits: RequestLimits) -> np.ndarray:
    """The images of a JSON body, (N, C, H, W) int64, or a Rejection saying what is wrong."""
    form = f'expected {{"inputs": [...]}}: images {limits.shape_text} of {EXPECTED}'
    try:
        payload = json.loads(body)
    except RecursionError:
        raise Rejection(400, f"JSON nested too deeply; {form}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError: position, no content
        raise Rejection(400, f"the body is not valid JSON ({_short(exc)}); {form}") from None
    if (
        not isinstance(payload, dict)
        or len(payload) != 1
        or not {"inputs", "instances"} & set(payload)
    ):
        raise Rejection(400, form)
    images = next(iter(payload.values()))
    if not isinstance(images, list) or not images:
        raise Rejection(400, f"no images; {form}")
    if len(images) > limits.max_batch:
        raise Rejection(
            413, f"{len(images)} images: at most {limits.max_batch} per request",
            "RESOURCE_LIMIT_EXCEEDED",
        )  # fmt: skip
    return _as_array(images, limits, form)


def _as_array(images: list[Any], limits: RequestLimits, form: str) -> np.ndarray:
    depth, first = 0, images
    while isinstance(first, list) and first and depth <= 4:
        first, depth = first[0], depth + 1
    if depth > 4 or isinstance(first, list):
        raise Rejection(400, f"nested deeper than images {limits.shape_text}; {form}")
    try:
        array = np.asarray(images)
    except (ValueError, TypeError, OverflowError):  # ragged, or nested deeper further on
        raise Rejection(400, f"images must have shape {limits.shape_text}; {form}") from None
    if array.ndim != 4 or tuple(array.shape[1:]) != limits.image_shape:
        got = tuple(array.shape) if array.dtype != object else "a ragged nesting"
        raise Rejection(400, f"images must have shape {limits.shape_text}, got {got}")
    return _check_values(array)


def _check_values(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "b":
        raise Rejection(400, f"pixel values must be {EXPECTED}, got booleans")
    if kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            value = float(array[bad][0])
            hint = " (images scaled to 0..1? send the raw pixels)" if 0 < value < 1 else ""
            raise Rejection(400, f"pixel values must be {EXPECTED}, got {value:g}{hint}")
    elif kind not in "iu":
        raise Rejection(400, f"pixel values must be {EXPECTED}, got strings, null or objects")
    low, high = array.min(), array.max()
    if low < 0 or high > PIXEL_MAX:
        raise Rejection(400, f"pixel values must be {EXPECTED}, got {low:g}..{high:g}")
    return array.astype(np.int64, copy=False)


def _short(exc: BaseException) -> str:
    return str(exc)[:120]


class RequestGuard:
    """ASGI middleware: checks POST `path` (see the module doc), passes the rest through."""

    def __init__(
        self,
        app: ASGIApp,
        limits: RequestLimits,
        path: str = "/invocations",
        sampler: RequestSampler | None = None,
    ) -> None:
        self.app, self.limits, self.path, self.sampler = app, limits, path, sampler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body, images = await self._checked_body(scope, receive)
        except Rejection as rejection:
            await respond(send, rejection)
            return
        status: list[int] = []
        await self.app(scope, replay(body, receive), cut_errors(send, status))
        if self.sampler is not None and status == [200]:  # answered: keep a sample of it,
            loop = asyncio.get_running_loop()  # off the event loop, after the answer
            loop.run_in_executor(None, self.sampler.offer, images)

    async def _checked_body(self, scope: Scope, receive: Receive) -> tuple[bytes, np.ndarray]:
        headers = dict(scope["headers"])
        check_content_type(headers.get(b"content-type"))
        check_length(headers.get(b"content-length"), self.limits)
        body = await read_body(receive, self.limits)
        if len(body) > THREAD_BYTES:  # ~20 ms per MB: keep the event loop answering
            images = await asyncio.to_thread(parse_images, body, self.limits)
        else:
            images = parse_images(body, self.limits)
        if _has_boolean(body):
            raise Rejection(400, f"pixel values must be {EXPECTED}, got booleans")
        return body, images


def _has_boolean(body: bytes) -> bool:
    """`true`/`false` outside a string: numpy turns [1, true] into [1, 1]. A valid body has
    no strings but its one key, so any occurrence is a boolean (or fails parsing anyway)."""
    return b"true" in body or b"false" in body


async def read_body(receive: Receive, limits: RequestLimits) -> bytes:
    """The whole body, stopping as soon as it passes the limit."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejection(400, "the client disconnected", "BAD_REQUEST")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large(limits)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the client's events."""
    sent = False

    async def inner() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


async def respond(send: Send, rejection: Rejection) -> None:
    body = json.dumps({"error_code": rejection.code, "message": rejection.message}).encode()
    headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if rejection.status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body stays unread
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def cut_errors(send: Send, status: list[int] | None = None) -> Send:
    """Pass 2xx/3xx through; replace an error answer by its code and a short message
    (MLflow's can quote the whole request and carry a stack trace). The app's status is
    appended to `status` when given."""
    start: Message | None = None
    parts: list[bytes] = []

    async def inner(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and status is not None:
            status.append(int(message["status"]))
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return
        if start is None:
            await send(message)
            return
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            await respond(send, Rejection(start["status"], *_mlflow_error(b"".join(parts))))

    return inner


def _mlflow_error(body: bytes) -> tuple[str, str]:
    """(message, code) of an MLflow error body, the message without the echoed input."""
    try:
        error = json.loads(body)
        message, code = str(error["message"]), str(error.get("error_code", "BAD_REQUEST"))
    except (ValueError, KeyError, TypeError):
        message, code = body.decode("utf-8", "replace"), "BAD_REQUEST"
    _, sep, tail = message.rpartition("Error: ")  # "Failed to predict data '<input>' ... Error:"
    message = (tail if sep else message).strip().splitlines()[0] if message.strip() else ""
    return message[:MAX_MESSAGE] or "the request failed", code
