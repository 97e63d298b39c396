"""The `ingest` stage end to end: params.yaml in, a dataset folder out, or one error line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pipelines.ingest import main

from mlpipe.dataset import load_dataset
from mlpipe.ingest.idx import encode_idx, write_idx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_params(tmp_path: Path, data: dict[str, Any]) -> Path:
    """The repo's params.yaml with its `data` section replaced."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = data
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def digits_data() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "conf/data/digits.yaml").read_text())


def idx_data(folder: Path) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "conf/data/fashion_mnist.yaml").read_text())
    return {**data, "path": str(folder), "urls": [], "verify_checksums": False}


def write_fashion(folder: Path, n_train: int = 30, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return folder


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run(params: Path, out: Path) -> int:
    return main(["--params", str(params), "--out", str(out)])


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ingest: ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("ingest: error: ")
    return lines[0]


def test_digits_writes_the_dataset_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    assert run(write_params(tmp_path, digits_data()), out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json",
        "test-00000.npy",
        "test.index.npz",
        "train-00000.npy",
        "train.index.npz",
    ]
    ds = load_dataset(out)
    assert ds.meta()["splits"] == {"train": 1437, "test": 360}
    assert ds.image_shape == (1, 28, 28)
    assert ds.source == "sklearn.datasets.load_digits"


def test_idx_folder_writes_the_dataset_folder(tmp_path: Path) -> None:
    folder = write_fashion(tmp_path / "fm")
    out = tmp_path / "raw"
    assert run(write_params(tmp_path, idx_data(folder)), out) == 0
    ds = load_dataset(out)
    assert ds.meta()["splits"] == {"train": 30, "test": 10}
    assert ds.source == str(folder)
    assert ds.class_names[0] == "T-shirt/top"


def truncate(folder: Path) -> tuple[Path, str]:
    (folder / "train-images-idx3-ubyte.gz").unlink()
    bad = folder / "train-images-idx3-ubyte"  # uncompressed, cut after 1200 pixels
    bad.write_bytes(encode_idx(np.zeros((30, 28, 28), np.uint8))[: 16 + 1200])
    return bad, "truncated: header says 30x28x28 = 23520 bytes, found 1200"


def wrong_magic(folder: Path) -> tuple[Path, str]:
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    bad = folder / "t10k-labels-idx1-ubyte"
    bad.write_bytes(struct.pack(">II", 0x999, 10) + bytes(10))
    return bad, "wrong magic number 0x00000999"


def count_mismatch(folder: Path) -> tuple[Path, str]:
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, np.arange(9, dtype=np.uint8))
    return bad, "holds 10 images but"


def not_gzip(folder: Path) -> tuple[Path, str]:
    bad = folder / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(encode_idx(np.zeros(30, np.uint8)))
    return bad, "not a valid gzip file"


def missing_source(folder: Path) -> tuple[Path, str]:
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return folder, "missing"


@pytest.mark.parametrize(
    "breakage", [truncate, wrong_magic, count_mismatch, not_gzip, missing_source]
)
def test_bad_input_fails_with_one_line_and_keeps_previous_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: Any
) -> None:
    out = tmp_path / "raw"
    assert run(write_params(tmp_path, digits_data()), out) == 0
    before = hashes(out)
    folder = write_fashion(tmp_path / "fm")
    bad, problem = breakage(folder)
    capsys.readouterr()

    assert run(write_params(tmp_path, idx_data(folder)), out) == 1

    line = error_line(capsys)
    assert str(bad) in line and problem in line
    assert hashes(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")] == []


def test_bad_params_fail_before_touching_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "raw"
    assert run(write_params(tmp_path, digits_data()), out) == 0
    before = hashes(out)
    capsys.readouterr()
    assert run(write_params(tmp_path, {**digits_data(), "channels": 2}), out) == 1
    assert "data.channels: must be 1 or 3, got 2" in error_line(capsys)
    assert hashes(out) == before


def test_image_folder_reports_what_it_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "imgs"
    for c, name in enumerate(["cat", "dog", ".hidden"]):
        for i in range(3):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 * c + i, np.uint8)).save(folder / f"{i}.png")
    (root / "dog" / "loop.png").symlink_to("loop.png")
    data = yaml.safe_load((ROOT / "conf/data/imagefolder.yaml").read_text())
    params = write_params(tmp_path, {**data, "path": str(root), "image_size": 8})
    out, report = tmp_path / "raw", tmp_path / "ingest.json"
    with caplog.at_level(logging.WARNING):
        assert main(["--params", str(params), "--out", str(out), "--report", str(report)]) == 0
    counts = json.loads(report.read_text())["ignored"]
    assert counts == {"hidden": 1, "link_loop": 1, "broken_link": 0, "not_a_file": 0}
    assert load_dataset(out).extra["ignored"] == [
        {"entry": ".hidden", "reason": "hidden"},
        {"entry": "dog/loop.png", "reason": "link_loop"},
    ]
    warned = [r.getMessage() for r in caplog.records if r.name == "mlpipe.ingest.walk"]
    assert len(warned) == 2 and warned[0].startswith("ignored 1 hidden (name starts with '.')")


KILLED_MID_WRITE = """
import os, signal, sys
import numpy as np
from pipelines.ingest import main
np.savez = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # dies inside the write
main(sys.argv[1:])
"""


def test_the_next_run_removes_what_a_killed_run_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "data" / "raw"
    params = write_params(tmp_path, digits_data())
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    argv = [sys.executable, "-c", KILLED_MID_WRITE, "--params", str(params), "--out", str(out)]
    killed = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = out.parent.iterdir()
    assert left.name.startswith(".raw.") and left.name.endswith(".tmp")
    with caplog.at_level(logging.WARNING, logger="mlpipe.io"):
        assert run(params, out) == 0
    assert [p.name for p in out.parent.iterdir()] == ["raw"]
    assert load_dataset(out).meta()["splits"] == {"train": 1437, "test": 360}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mlpipe.io"]
    assert line.startswith(f"removed {left}: left over by a killed write of {out}")


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_debian_files_with_checksums(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "conf/data/fashion_mnist.yaml").read_text())
    data = {
        **data,
        "path": None,
        "debian_dir": str(DEBIAN_DIR),
        "urls": [],
        "verify_checksums": True,
    }
    out = tmp_path / "raw"
    assert run(write_params(tmp_path, data), out) == 0
    ds = load_dataset(out)
    assert ds.meta()["splits"] == {"train": 60000, "test": 10000}
    assert ds.source == str(DEBIAN_DIR)
    for split in ds.splits.values():
        assert split.images.shape[1:] == (1, 28, 28)
        assert sorted(np.unique(split.labels).tolist()) == list(range(10))
