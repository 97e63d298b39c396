"""Issue 12: resume across two "nodes" (two torchrun processes with --nnodes=2 on loopback,
gloo, CPU), each with its own model folder, so only node 0 ever holds resume.pt.

Node 0's worker dies after epoch 1's checkpoint: node 1 does not hang but fails at its next
collective. Rerun, rank 0 alone reads its file and broadcasts the state: both ranks resume
after epoch 1 with the same weights, and the result equals the uninterrupted two-node run
bit for bit. Before, rank 1 (no file on its disk) started from scratch while rank 0
resumed: different trajectories, then a crash.

Run as a script (by torchrun) this file is the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.integration.test_ddp import TRAIN, VAL, config, make_model

from mlpipe.models.cnn import CNNConfig
from mlpipe.train import distributed
from mlpipe.train.config import DeviceChoice, Precision
from mlpipe.train.device import resolve_runtime
from mlpipe.train.engine import EpochStats, fit
from mlpipe.train.resume import RESUME_FILE, ResumeFile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL_CFG = CNNConfig(channels=[8], pool_size=2, hidden=16)  # test_ddp's "cnn"
TIMING = {"seconds", "images_per_second"}
DIES = 3  # exit code of node 0's worker when told to die


def worker(node_dir: Path, die_at: int) -> None:
    torch.set_num_threads(1)
    runtime = resolve_runtime(DeviceChoice.cpu, Precision.fp32, deterministic=True)
    cfg = config("cnn")
    model = make_model("cnn")
    data = {"train": TRAIN, "val": VAL}
    resume = ResumeFile.for_run(node_dir / RESUME_FILE, MODEL_CFG, cfg, data, runtime.dist)

    def on_epoch(stats: EpochStats) -> None:
        if stats.epoch == die_at and runtime.dist.is_main:
            os._exit(DIES)  # a node lost mid-run, after the previous epoch's checkpoint

    try:
        history = fit(model, TRAIN, VAL, cfg, runtime, on_epoch, checkpointer=resume)
    finally:
        distributed.shutdown()
    out = {
        "resumed_from_epoch": history.resumed_from_epoch,
        "rows": [{k: v for k, v in r.items() if k not in TIMING} for r in history.rows()],
        "weights": distributed.tensors_digest(model.state_dict().items()),
    }
    (node_dir / "result.json").write_text(json.dumps(out))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_nodes(root: Path, die_at: int = 0) -> list[subprocess.CompletedProcess[str]]:
    """Both nodes' torchrun, started together; each node's worker writes in root/node<r>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    env["MLPIPE_DIST_TIMEOUT_S"] = "60"
    port = free_port()
    procs = []
    for rank in (0, 1):
        node = root / f"node{rank}"
        node.mkdir(exist_ok=True)
        (node / "result.json").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}"]
        cmd += ["--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}"]
        cmd += ["--rdzv-conf", "timeout=60", __file__, "--node-dir", str(node)]
        cmd += ["--die-at", str(die_at)]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, killed whole on a hang
            )
        )
    done = []
    try:
        for proc in procs:  # a node that hangs fails the test here rather than blocking CI
            out, err = proc.communicate(timeout=150)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun ignores SIGTERM in its exit barrier
                proc.wait()
    return done


def result(root: Path, rank: int) -> dict:
    return json.loads((root / f"node{rank}" / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    whole, killed = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("killed")
    for proc in two_nodes(whole):
        assert proc.returncode == 0, proc.stderr[-3000:]
    died = two_nodes(killed, die_at=2)
    assert [p.returncode for p in died] != [0, 0], "node 0 was told to die"
    assert (killed / "node0" / RESUME_FILE).exists()
    assert not (killed / "node1" / RESUME_FILE).exists()  # rank 1 never writes
    saved = torch.load(killed / "node0" / RESUME_FILE, weights_only=True)
    assert saved["complete"] is False and saved["state"]["epoch"] == 1
    for proc in two_nodes(killed):
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"whole": whole, "killed": killed, "died": died}  # type: ignore[dict-item]


def test_both_ranks_resume_from_rank_0s_file_with_the_same_weights(runs):
    ranks = [result(runs["killed"], r) for r in (0, 1)]
    assert [r["resumed_from_epoch"] for r in ranks] == [1, 1]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["rows"] == ranks[1]["rows"]


def test_resumed_two_node_run_equals_the_uninterrupted_one(runs):
    whole, resumed = result(runs["whole"], 0), result(runs["killed"], 0)
    assert whole["resumed_from_epoch"] == 0
    assert len(resumed["rows"]) == len(whole["rows"]) == 5
    assert resumed["rows"] == whole["rows"]
    assert resumed["weights"] == whole["weights"]


def test_a_dead_node_fails_the_other_instead_of_hanging(runs):
    node0, node1 = runs["died"]  # both returned (within communicate's timeout)
    assert node0.returncode != 0 and node1.returncode != 0
    assert "exitcode  : 3" in node0.stderr or "exitcode: 3" in node0.stderr


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--die-at", type=int, default=0)
    args = parser.parse_args()
    worker(args.node_dir, args.die_at)
