"""The registered champion, served for real: `mlpipe serve` (MLflow's scoring server, local
environment, behind mlpipe's request guard).

A tiny CNN is trained in-process on scikit-learn's 8x8 digits, logged through
`logged_model.log_classifier` into a temporary SQLite store, registered and made
champion.
The server runs as a subprocess on a free loopback port and is always stopped.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlpipe.models import build_model
from mlpipe.models.cnn import CNNConfig
from mlpipe.monitor.batch import load_batch
from mlpipe.tracking import logged_model, registry
from mlpipe.tracking import store as tracking_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "digits-tiny"
CLASSES = [str(d) for d in range(10)]
STARTUP_TIMEOUT_S = 120


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return images, data.target.astype(np.int64)


def train_tiny_cnn(images: np.ndarray, labels: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    x = torch.from_numpy(images.astype(np.float32))
    mean, std = [float(x.mean() / 255)], [float(x.std() / 255)]
    cfg = CNNConfig(channels=[8, 16], pool_size=2, hidden=32, dropout=0.0)
    model = build_model(cfg, 1, len(CLASSES), mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    y = torch.from_numpy(labels)
    for _ in range(4):
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


JSON = {"Content-Type": "application/json"}
LIMIT = 1024 * 64 * 6 + 64 * 1024  # the guard's body limit for 8x8 images: 1,024 of them


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers or JSON)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def raw_post(url: str, head: dict[str, str], chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """POST over a bare socket, sending `chunks` until the server answers (it may stop
    reading and close early): the whole answer and how many body bytes were sent."""
    host, port = url.removeprefix("http://").split(":")
    head = {"Host": host, "Connection": "close", **head}
    lines = ["POST /invocations HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    sent = 0
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered
            try:
                sock.sendall(chunk)
            except OSError:  # closed by the server after its answer
                break
            sent += len(chunk)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer, sent


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"server not up after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The server spawns uvicorn: end the whole process group we started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


TEMPERATURE = 1.7  # as if fitted on a validation split


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    images, labels = digits()
    model = train_tiny_cnn(images[:1500], labels[:1500])
    test = images[1500:1564]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(tracking_store, "_exported_uri", None)
        mp.setattr(tracking_store, "_user_override", None)
        tracking_store.setup("serving")
        import mlflow

        with mlflow.start_run():
            model_uri = logged_model.log_classifier(
                model, CLASSES, images[:4], temperature=TEMPERATURE
            )
        version = registry.register(model_uri, NAME, {})
        registry.set_alias(NAME, "champion", version)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
        offline = pyfunc.predict(test)
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    with torch.no_grad():
        # served probabilities are the temperature-scaled ones
        direct = torch.softmax(model(torch.from_numpy(test)) / TEMPERATURE, dim=1).numpy()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlpipe.cli", "serve", "--model", f"models:/{NAME}@champion"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--sample-dir", str(root / "sample"), "--sample-rate", "1"]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log)
        print(f"server up in {time.monotonic() - started:.1f} s")
        yield {
            "url": url,
            "test": test,
            "offline": offline,
            "direct": direct,
            "pyfunc": pyfunc,
            "env": env,
            "sample": root / "sample",
        }
    finally:
        stop(proc)


def test_offline_pyfunc_matches_the_pytorch_model(served):
    offline, direct = served["offline"], served["direct"]
    assert list(offline.columns) == ["label", "probability", "probabilities"]
    assert offline["label"].tolist() == [CLASSES[i] for i in direct.argmax(axis=1)]
    np.testing.assert_allclose(np.stack(offline["probabilities"]), direct, atol=1e-5)


def test_served_predictions_match_offline(served):
    status, body = post(served["url"], json.dumps({"inputs": served["test"].tolist()}).encode())
    assert status == 200
    rows = body["predictions"]
    offline = served["offline"]
    assert [r["label"] for r in rows] == offline["label"].tolist()
    probs = np.array([r["probabilities"] for r in rows])
    np.testing.assert_allclose(probs, np.stack(offline["probabilities"]), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [r["probability"] for r in rows] == pytest.approx(probs.max(axis=1).tolist())


def test_answered_requests_are_kept_for_mlpipe_monitor(served):
    """--sample-dir: each answered request becomes one .npz that `monitor.batch` reads."""
    sent = served["test"][5:12]  # 7 images: no other test sends 7
    status, _ = post(served["url"], json.dumps({"inputs": sent.tolist()}).encode())
    assert status == 200
    deadline = time.monotonic() + 10  # written off the event loop, after the answer
    while not list(served["sample"].glob("requests-*-n7.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (path,) = served["sample"].glob("requests-*-n7.npz")
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["images"], sent)
    assert load_batch(served["sample"]).images.shape[1:] == sent.shape[1:]


def test_whole_number_float_pixels_are_accepted(served):
    floats = served["test"][:8].astype(float).tolist()
    status, body = post(served["url"], json.dumps({"inputs": floats}).encode())
    assert status == 200
    assert [r["label"] for r in body["predictions"]] == served["offline"]["label"][:8].tolist()


def test_instances_and_any_integer_spelling_are_accepted(served):
    batch = served["test"][:4].tolist()
    for key in ("instances", "inputs"):
        payload = json.dumps({key: batch}, separators=(",", ":")).encode()
        status, body = post(
            served["url"], payload, {"Content-Type": "application/json; charset=utf-8"}
        )
        assert status == 200, body
        assert [r["label"] for r in body["predictions"]] == served["offline"]["label"][:4].tolist()


def test_pixels_scaled_to_one_get_400_naming_the_dtype(served):
    scaled = (served["test"][:8] / 255).tolist()
    status, body = post(served["url"], json.dumps({"inputs": scaled}).encode())
    assert status == 400, body
    assert "integers 0..255 (uint8 pixels)" in body["message"]
    assert "scaled to 0..1" in body["message"]


def test_the_model_itself_refuses_fractions_and_takes_any_integer_dtype(served):
    """Without the guard (offline, or MLflow's scoring code on its own), floats are not cast
    to uint8 on the way in: the model refuses them."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    pyfunc, test = served["pyfunc"], served["test"][:8]
    assert pyfunc.metadata.get_input_schema() is None  # nothing to cast requests to
    labels = served["offline"]["label"][:8].tolist()
    for images in (test.astype(np.int64), test.astype(np.float32)):
        assert pyfunc.predict(images)["label"].tolist() == labels
    with pytest.raises(MlflowException, match=r"integers 0\.\.255 \(uint8 pixels\), got 0\.\d+"):
        pyfunc.predict(test / 255)
    body = json.dumps({"inputs": (test / 255).tolist()})
    with pytest.raises(MlflowException, match=r"integers 0\.\.255") as caught:
        scoring_server.invocations(body, "application/json", pyfunc, None)
    assert caught.value.get_http_status_code() == 400


def bad_requests(test: np.ndarray) -> list[tuple[str, bytes, str]]:
    two = test[:2]
    return [
        ("no channel axis", json.dumps({"inputs": two[:, 0].tolist()}).encode(),
         "must have shape (N, 1, 8, 8), got (2, 8, 8)"),
        ("wrong size", json.dumps({"inputs": two[:, :, :4].tolist()}).encode(),
         "must have shape (N, 1, 8, 8), got (2, 1, 4, 8)"),
        ("strings", json.dumps({"inputs": np.full(two.shape, "x").tolist()}).encode(),
         "integers 0..255 (uint8 pixels), got strings"),
        ("out of range", json.dumps({"inputs": (two.astype(int) + 300).tolist()}).encode(),
         "integers 0..255 (uint8 pixels), got 300.."),
        ("booleans", json.dumps({"inputs": (two > 100).tolist()}).encode(),
         "integers 0..255 (uint8 pixels), got booleans"),
        ("a boolean among pixels", json.dumps({"inputs": [[[[True] + [0] * 7] * 8]]}).encode(),
         "got booleans"),
        ("one level too deep", json.dumps({"inputs": two[..., None].tolist()}).encode(),
         "nested deeper than images (N, 1, 8, 8)"),
        ("deeply nested", b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
         "nested too deeply"),
        ("empty body", b"", "not valid JSON"),
        ("not JSON", b"{images:", "not valid JSON"),
        ("no inputs key", json.dumps({"images": two.tolist()}).encode(), '{"inputs": [...]}'),
        ("empty batch", json.dumps({"inputs": []}).encode(), "no images"),
    ]  # fmt: skip


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(served):
    for what, body, message in bad_requests(served["test"]):
        status, answer = post(served["url"], body)
        assert 400 <= status < 500, (what, status, answer)
        assert message in answer.get("message", ""), (what, answer)
    status, body = post(served["url"], json.dumps({"inputs": served["test"][:4].tolist()}).encode())
    assert status == 200
    assert [r["label"] for r in body["predictions"]] == served["offline"]["label"][:4].tolist()


@pytest.mark.parametrize("content_type", [None, "text/csv", "text/plain"])
def test_a_missing_or_other_content_type_gets_415(served, content_type):
    body = json.dumps({"inputs": served["test"][:2].tolist()}).encode()
    head = {"Content-Length": str(len(body))}
    if content_type:
        head["Content-Type"] = content_type
    answer, _ = raw_post(served["url"], head, iter([body]))
    assert answer.startswith(b"HTTP/1.1 415"), answer[:200]
    assert b"send application/json" in answer or b"Content-Type: application/json" in answer


def test_a_body_over_the_limit_gets_413_without_being_read_or_echoed(served):
    junk = b"Z" * (4 * LIMIT)  # the probe: a large junk body, once echoed in full
    head = {"Content-Type": "application/json", "Content-Length": str(len(junk))}
    answer, sent = raw_post(
        served["url"], head, (junk[i : i + 65536] for i in range(0, len(junk), 65536))
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert len(answer) < 1000 and b"ZZZ" not in answer
    assert sent < len(junk)  # answered from Content-Length, before the body was sent


def test_a_streamed_body_is_read_only_up_to_the_limit(served):
    """No Content-Length (chunked): the guard stops reading at the limit and answers."""
    piece = b"[" + b"1," * 32767 + b"1]"  # 64 KiB of numbers, no closing bracket
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    answer, sent = raw_post(served["url"], head, iter([chunk] * (8 * LIMIT // len(piece))))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert len(answer) < 1000 and b"1,1," not in answer
    assert sent < 4 * LIMIT


def test_more_than_1024_images_get_413(served):
    batch = np.repeat(served["test"][:1], 1025, axis=0).tolist()
    status, body = post(
        served["url"], json.dumps({"inputs": batch}, separators=(",", ":")).encode()
    )
    assert status == 413, body
    assert "at most 1024 per request" in body["message"]
    status, body = post(served["url"], json.dumps({"inputs": batch[:1024]}).encode())
    assert status == 200 and len(body["predictions"]) == 1024


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--model", "models:/no-such-model@champion"],
         "mlpipe serve: error: loading models:/no-such-model@champion: "),
        (["--max-batch", "0"], "mlpipe serve: error: --max-batch must be at least 1, got 0"),
        (["--sample-dir", "s", "--sample-rate", "0"],
         "mlpipe serve: error: --sample-rate: must be in (0, 1], got 0.0"),
    ],
)  # fmt: skip
def test_serve_errors_are_one_line(served, tmp_path, args, line):
    cmd = [sys.executable, "-m", "mlpipe.cli", "serve", "--name", NAME, *args]
    out = subprocess.run(cmd, cwd=tmp_path, env=served["env"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith(line) and out.stderr.count("\n") == 1, out.stderr
