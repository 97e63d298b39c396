"""The registered champion, served for real: `mlflow models serve --env-manager local`.

A tiny CNN is trained in-process on scikit-learn's 8x8 digits, logged through
`logged_model.log_classifier` into a temporary SQLite store, registered and made
champion.
The server runs as a subprocess on a free loopback port and is always stopped.
"""

from __future__ import annotations

import json
import os
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


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


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
            model_uri = logged_model.log_classifier(model, CLASSES, images[:4])
        version = registry.register(model_uri, NAME, {})
        registry.set_alias(NAME, "champion", version)
        offline = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(test)
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(test)), dim=1).numpy()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log)
        print(f"server up in {time.monotonic() - started:.1f} s")
        yield {"url": url, "test": test, "offline": offline, "direct": direct}
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


def test_float_pixels_are_accepted(served):
    floats = served["test"][:8].astype(float).tolist()
    status, body = post(served["url"], json.dumps({"inputs": floats}).encode())
    assert status == 200
    assert [r["label"] for r in body["predictions"]] == served["offline"]["label"][:8].tolist()


def bad_requests(test: np.ndarray) -> list[tuple[str, bytes, str]]:
    two = test[:2]
    return [
        ("no channel axis", json.dumps({"inputs": two[:, 0].tolist()}).encode(),
         "does not match expected shape (-1, 1, 8, 8)"),
        ("wrong size", json.dumps({"inputs": two[:, :, :4].tolist()}).encode(),
         "does not match expected shape (-1, 1, 8, 8)"),
        ("strings", json.dumps({"inputs": np.full(two.shape, "x").tolist()}).encode(),
         "invalid literal for int()"),
        ("out of range", json.dumps({"inputs": (two.astype(int) + 300).tolist()}).encode(),
         "out of bounds for uint8"),
        ("empty body", b"", "valid JSON"),
        ("not JSON", b"{images:", "valid JSON"),
        ("no inputs key", json.dumps({"images": two.tolist()}).encode(), "inputs"),
        ("empty batch", json.dumps({"inputs": []}).encode(), "tensor-based model signature"),
    ]  # fmt: skip


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(served):
    for what, body, message in bad_requests(served["test"]):
        status, answer = post(served["url"], body)
        assert 400 <= status < 500, (what, status, answer)
        assert message in answer.get("message", ""), (what, answer)
    status, body = post(served["url"], json.dumps({"inputs": served["test"][:4].tolist()}).encode())
    assert status == 200
    assert [r["label"] for r in body["predictions"]] == served["offline"]["label"][:4].tolist()
