"""Issue 12 figures (not collected by pytest): `mlpipe.stack up` wall time, and the smoke
pipeline (`dvc exp run -S data=digits -S train=smoke` in a fresh copy of the repo) against the
server vs SQLite. Run: PYTHONPATH=src:. python tests/integration/bench_team_stack.py

`--logging-overhead data/processed`: the train stage with params.yaml (the default CPU run)
against the stack's server, in this process, timing every call that talks to the tracking
server (health check, opening and closing the run, params, dataset inputs, the validation
report, per-epoch and per-step metrics, calibration metrics, the logged model) against the
stage's wall time. MLflow's system-metrics sampler runs in its own thread and is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from tests.integration.test_pipeline_e2e import copy_repo, run

from mlpipe.stack import core as stack

SMOKE = ["dvc", "exp", "run", "-S", "data=digits", "-S", "train=smoke"]


def timed_smoke(extra_env: dict[str, str] | None, repo: Path) -> float:
    t0 = time.monotonic()
    run(SMOKE, repo, extra_env=extra_env)
    return time.monotonic() - t0


def fresh(parent: Path, name: str) -> Path:
    (parent / name).mkdir()
    return copy_repo(parent / name)


def main() -> None:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_repo = fresh(Path(tmp), "a")
        out["smoke_sqlite_s"] = timed_smoke(None, sqlite_repo)
        server_repo = fresh(Path(tmp), "b")
        t0 = time.monotonic()
        state = stack.up(server_repo, fast=True)
        out["stack_up_s"] = time.monotonic() - t0
        try:
            env = {"MLFLOW_TRACKING_URI": state["tracking_uri"]}
            out["smoke_server_s"] = timed_smoke(env, server_repo)
            for name, repo in (("sqlite", sqlite_repo), ("server", server_repo)):
                lines = (repo / "reports/plots/training_curves.csv").read_text().splitlines()
                head = lines[0].split(",")
                if "seconds" in head:
                    col = head.index("seconds")
                    secs = sum(float(r.split(",")[col]) for r in lines[1:])
                    out[f"train_epoch_seconds_{name}"] = secs
        finally:
            stack.down(server_repo)
    out["ratio_server_over_sqlite"] = out["smoke_server_s"] / out["smoke_sqlite_s"]
    print(json.dumps({k: round(v, 2) for k, v in out.items()}, indent=2))


class CallTimer:
    """Wall time inside wrapped calls; nested wrapped calls are counted once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.depth = 0

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        self.depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def wrap(self, module: Any, name: str) -> None:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timing(name):
                return fn(*args, **kwargs)

        setattr(module, name, timed)

    def wrap_context(self, module: Any, name: str) -> None:
        """A context manager function: its entering and its leaving are timed."""
        fn: Callable[..., Any] = getattr(module, name)

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            cm = fn(*args, **kwargs)
            with self.timing(name):
                value = cm.__enter__()
            try:
                yield value
            except BaseException:
                with self.timing(name):
                    if not cm.__exit__(*sys.exc_info()):
                        raise
            else:
                with self.timing(name):
                    cm.__exit__(None, None, None)

        setattr(module, name, timed)


def logging_overhead(
    data: Path, params: Path, reports: Path | None, epochs: int | None = None
) -> dict[str, Any]:
    import pipelines.train as stage_main

    from mlpipe.tracking import health, inputs, logged_model, runs
    from mlpipe.train import stage

    timer = CallTimer()
    for name in ("log_metrics", "log_series", "log_params", "log_artifact", "log_artifacts",
                 "set_tags"):  # fmt: skip
        timer.wrap(runs, name)
    timer.wrap(health, "check_reachable")
    timer.wrap(inputs, "log_split_inputs")
    timer.wrap(logged_model, "log_classifier")
    timer.wrap_context(stage, "open_run")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        state = stack.up(root, fast=True)
        out["stack_up_s"] = time.monotonic() - t0
        os.environ["MLFLOW_TRACKING_URI"] = state["tracking_uri"]
        if epochs is not None:  # fewer epochs: the fixed logging costs weigh more
            cfg = yaml.safe_load(params.read_text())
            cfg["train"]["epochs"] = epochs
            params = root / "params.yaml"
            params.write_text(yaml.safe_dump(cfg))
        argv = ["--params", str(params), "--data", str(data), "--model-dir", str(root / "m")]
        argv += ["--report", str(root / "train.json"), "--curves", str(root / "curves.csv")]
        if reports is not None:
            argv += ["--validation", str(reports / "validate.json")]
            argv += ["--data-docs", str(reports / "validate.html")]
        try:
            t0 = time.monotonic()
            rc = stage_main.main(argv)
            out["train_stage_s"] = time.monotonic() - t0
        finally:
            stack.down(root)
        assert rc == 0, "the train stage failed"
        report = json.loads((root / "train.json").read_text())
    out["training_s"] = report.get("train_seconds")
    out["logging_s"] = sum(timer.seconds.values())
    out["logging_by_call_s"] = {k: round(v, 3) for k, v in sorted(timer.seconds.items())}
    out["logging_share_of_stage"] = out["logging_s"] / out["train_stage_s"]
    out["epochs"] = report.get("epochs")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--logging-overhead", type=Path, metavar="DATA")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--reports", type=Path, help="folder with validate.json, validate.html")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stack.down runs on a kill too
    if args.logging_overhead is None:
        main()
    else:
        figures = logging_overhead(args.logging_overhead, args.params, args.reports, args.epochs)
        print(json.dumps(figures, indent=2, default=lambda v: round(v, 4)))
