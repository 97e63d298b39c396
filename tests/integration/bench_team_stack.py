"""Issue 12 figures (not collected by pytest): `mlpipe.stack up` wall time, and the smoke
pipeline (`dvc exp run -S data=digits -S train=smoke` in a fresh copy of the repo) against the
server vs SQLite. Run: PYTHONPATH=src:. python tests/integration/bench_team_stack.py"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

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


if __name__ == "__main__":
    main()
