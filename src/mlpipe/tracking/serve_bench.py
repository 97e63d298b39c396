"""Request latency of the served model, with and without mlpipe's guard:
`python -m mlpipe.tracking.serve_bench` (`make bench-serve`).

A CNN of the default config (random weights: latency does not depend on them) for
1x28x28 images is logged with `logged_model.log_classifier` into a temporary SQLite
store and made champion. The same model is then served twice, each on a
free loopback port: by `mlflow models serve --env-manager local` (MLflow's app alone) and
by `mlpipe serve` (that app behind the guard), at the same time. After a warm-up, one
client sends `--requests` sequential batch-1 requests, each to both servers in turn (one
keep-alive connection each), then `--big-requests` of the largest batch (1,024 images);
it reports p50/p99 milliseconds per server.
Figures only: a shared machine makes them noisy, and nothing asserts them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (1, 28, 28)
NAME = "serve-bench"
MAX_BATCH = 1024


def log_champion(root: Path) -> str:
    """A default-config CNN as champion in a new store under `root`; the store's URI."""
    import mlflow
    import torch

    from mlpipe.models import build_model
    from mlpipe.models.cnn import CNNConfig
    from mlpipe.tracking import logged_model, registry

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    torch.manual_seed(0)
    model = build_model(CNNConfig(), SHAPE[0], 10, [0.29], [0.35]).eval()
    example = np.random.default_rng(0).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    with mlflow.start_run():
        model_uri = logged_model.log_classifier(model, [str(i) for i in range(10)], example)
    registry.set_alias(NAME, "champion", registry.register(model_uri, NAME, {}))
    return uri


def start(cmd: list[str], uri: str, root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = (root / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"server did not start: {' '.join(cmd)} (log in {root})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def timings(ports: list[int], bodies: list[bytes]) -> list[list[float]]:
    """Milliseconds per request and server: each body goes to every server in turn (the
    order alternating), one keep-alive connection each, so load from other processes
    weighs on all alike. Every answer must be 200."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for port in ports]
    out: list[list[float]] = [[] for _ in ports]
    for i, body in enumerate(bodies):
        order = range(len(ports)) if i % 2 == 0 else reversed(range(len(ports)))
        for k in order:
            began = time.perf_counter()
            conns[k].request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = conns[k].getresponse()
            response.read()
            out[k].append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                raise SystemExit(f"status {response.status} from port {ports[k]}")
    for conn in conns:
        conn.close()
    return out


def summary(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "n": len(ms),
    }


def measure(ports: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    one = [
        json.dumps({"inputs": rng.integers(0, 256, (1, *SHAPE)).tolist()}).encode()
        for _ in range(args.requests + args.warmup)
    ]
    big = json.dumps({"inputs": rng.integers(0, 256, (MAX_BATCH, *SHAPE)).tolist()}).encode()
    timings(ports, one[: args.warmup])
    small, large = timings(ports, one[args.warmup :]), timings(ports, [big] * args.big_requests)
    return [
        {"batch_1": summary(a), f"batch_{MAX_BATCH}": summary(b), "big_body_bytes": len(big)}
        for a, b in zip(small, large, strict=True)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="batch-1 requests per server")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--big-requests", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    model = f"models:/{NAME}@champion"
    servers = {
        "mlflow_models_serve": [sys.executable, "-m", "mlflow", "models", "serve", "-m", model,
                                "--env-manager", "local", "--host", "127.0.0.1", "--port"],
        "mlpipe_serve": [sys.executable, "-m", "mlpipe.cli", "serve", "--model", model,
                         "--host", "127.0.0.1", "--port"],
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = log_champion(Path(tmp))
        try:
            ports = [free_port() for _ in servers]
            for cmd, port in zip(servers.values(), ports, strict=True):
                procs.append(start([*cmd, str(port)], uri, Path(tmp), port))
            results = dict(zip(servers, measure(ports, args), strict=True))
        finally:
            for proc in procs:
                stop(proc)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
