"""Atomic writes and the leftovers of killed writers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipe.io import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
)

SRC = Path(__file__).resolve().parents[2] / "src"

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from mlpipe.io import atomic_dir, atomic_path, atomic_write_bytes
kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "dir":
    with atomic_dir(target) as tmp:
        (tmp / "train.npz").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
elif kind == "path":
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
else:  # killed before writing anything: only its PID is of use
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer(kind: str, target: Path) -> int:
    """Run a writer of `target` that is SIGKILLed mid-write; its (now dead) PID."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    argv = [sys.executable, "-c", KILLED_WRITER, kind, str(target)]
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE) as proc:
        _, err = proc.communicate()
    assert proc.returncode == -9, err
    return proc.pid


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_folder_write_is_cleaned_at_the_next_write(tmp_path: Path, caplog) -> None:
    raw = tmp_path / "data" / "raw"
    pid = killed_writer("dir", raw)
    (left,) = leftovers(raw.parent)
    assert left.startswith(f".raw.{pid}.") and left.endswith(".tmp")
    with caplog.at_level(logging.WARNING, logger="mlpipe.io"), atomic_dir(raw) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert leftovers(raw.parent) == []
    assert [p.name for p in raw.iterdir()] == ["meta.json"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"removed {raw.parent / left}: left over by a killed write of {raw}")
    assert f"(pid {pid})" in line


def test_a_killed_file_write_is_cleaned_at_the_next_write(tmp_path: Path, caplog) -> None:
    model = tmp_path / "model.pt"
    pid = killed_writer("path", model)
    (left,) = leftovers(tmp_path)
    assert left.startswith(f".model.pt.{pid}.") and left.endswith(".tmp.pt")
    with caplog.at_level(logging.WARNING, logger="mlpipe.io"):
        atomic_write_bytes(model, b"weights")
    assert leftovers(tmp_path) == [] and model.read_bytes() == b"weights"
    assert len(caplog.records) == 1


def test_every_kind_of_leftover_of_a_dead_writer_goes_one_line_each(tmp_path: Path, caplog) -> None:
    dead = killed_writer("pid", tmp_path / "unused")
    report = tmp_path / "data_docs"
    stale = [
        f".data_docs.{dead}.abcdefgh.tmp",  # atomic_dir's temporary
        f".data_docs.old-{dead}",  # atomic_dir's previous folder, moved aside
        ".data_docs.k2j4h6g8.tmp",  # an earlier version's, without a PID
    ]
    for name in stale:
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text("half")
    with caplog.at_level(logging.WARNING, logger="mlpipe.io"):
        removed = remove_stale_temporaries(report)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert leftovers(tmp_path) == []
    assert len(caplog.records) == 3
    assert all("left over by a killed write of" in r.getMessage() for r in caplog.records)


def test_leftovers_of_live_writers_and_of_other_outputs_are_kept(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            keep = [
                f".train.json.{alive.pid}.abcdefgh.tmp",  # another run writing it now
                f".evaluate.json.{killed_writer('pid', tmp_path / 'x')}.abcdefgh.tmp",
                ".train.json.notes",  # not a name any writer makes
                "train.json.bak",
            ]
            for name in keep:
                (tmp_path / name).write_text("x")
            atomic_write_json(tmp_path / "train.json", {"ok": True})
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "train.json"])
        finally:
            alive.kill()


def test_own_pid_is_stale_unless_this_process_is_writing_it(tmp_path: Path) -> None:
    out = tmp_path / "curves.csv"
    earlier = tmp_path / f".curves.csv.{os.getpid()}.abcdefgh.tmp"  # a past process had our PID
    earlier.write_text("old")
    with atomic_path(out) as tmp:  # this write is live: a nested write must not remove it
        tmp.write_text("outer")
        assert not earlier.exists()
        atomic_write_bytes(out, b"inner")
        assert tmp.exists()
    assert out.read_text() == "outer"
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_output_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["a"]
    assert leftovers(tmp_path) == []
