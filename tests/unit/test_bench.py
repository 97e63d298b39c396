"""The benchmark runs end to end on tiny synthetic IDX files and writes a well-formed
report. No timing is asserted: timings belong in `make bench`, not in tests."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mlpipe.ingest.idx import write_idx
from mlpipe.models import ARCHITECTURES, build_model
from mlpipe.train import bench

SRC = Path(__file__).resolve().parents[2] / "src"
# what a bare GPU box must have besides torch and numpy: mlpipe.config and the engine's needs
ALLOWED_THIRD_PARTY = {"torch", "numpy", "omegaconf", "yaml", "tqdm"}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_fashion_like(folder: Path, n_train: int = 192, n_test: int = 64) -> Path:
    """The four IDX files, plain and gzipped mixed: 10 classes, brightness by class."""
    rng = np.random.default_rng(0)
    for prefix, n, suffix in (("train", n_train, ".gz"), ("t10k", n_test, "")):
        labels = (np.arange(n) % 10).astype(np.uint8)
        noise = rng.integers(0, 40, size=(n, 28, 28))
        images = (labels[:, None, None].astype(np.int64) * 20 + noise).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--models", "cnn",
        "--device", "cpu", "--precision", "fp32", "--batch-size", "32",
        "--steps", "2", "--repeats", "2", "--max-epochs", "2", "--no-streaming", *extra,
    ]  # fmt: skip


def test_bench_runs_end_to_end_and_writes_the_report(tmp_path, capsys):
    data = write_fashion_like(tmp_path / "fmnist")
    out = tmp_path / "reports" / "bench.json"
    assert bench.main(tiny_args(data, out, "--train-limit", "128")) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["device"] == "cpu"
    assert report["precision"] == "fp32"
    assert report["models"] == ["cnn"]
    assert report["data"] == {"path": str(data), "train": 128, "test": 64}

    tp = report["throughput"]["cnn"]
    cnn = build_model(ARCHITECTURES["cnn"].config(), 1, 10, [0.5], [0.25])
    assert tp["params"] == sum(p.numel() for p in cnn.parameters())
    assert tp["images_per_epoch"] == 64  # steps * batch size
    assert len(tp["engine_runs"]) == len(tp["bare_runs"]) == 2  # the warm-up is dropped
    assert tp["ratio"] > 0
    assert tp["engine_images_per_second"] > 0
    assert tp["bare_images_per_second"] > 0

    tta = report["time_to_accuracy"]["cnn"]
    assert tta["target"] == 0.93
    assert tta["max_epochs"] == 2
    assert 1 <= len(tta["epochs"]) <= 2
    assert 0.0 <= tta["best_accuracy"] <= 1.0
    assert tta["reached"] == (tta["seconds"] is not None)
    seconds = [row["train_seconds"] for row in tta["epochs"]]
    assert seconds == sorted(seconds)
    assert all(s > 0 for s in seconds)

    table = capsys.readouterr().out
    assert "engine/bare" in table
    assert table.splitlines()[2].startswith("cnn")


def test_throughput_only_skips_time_to_accuracy(tmp_path):
    data = write_fashion_like(tmp_path)
    out = tmp_path / "bench.json"
    assert bench.main(tiny_args(data, out, "--throughput-only")) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["time_to_accuracy"] == {}
    assert report["throughput"]["cnn"]["ratio"] > 0


def test_target_reached_stops_training_early(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.RECIPES, "cnn", bench.Recipe(target=0.0, lr=1e-3, weight_decay=0))
    data = write_fashion_like(tmp_path)
    out = tmp_path / "bench.json"
    assert bench.main(tiny_args(data, out, "--max-epochs", "5")) == 0
    tta = json.loads(out.read_text(encoding="utf-8"))["time_to_accuracy"]["cnn"]
    assert tta["reached"] is True
    assert tta["epoch"] == 1
    assert len(tta["epochs"]) == 1
    assert tta["seconds"] == tta["epochs"][0]["train_seconds"]


def test_missing_data_fails_clearly_and_keeps_the_old_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("previous\n", encoding="utf-8")
    assert bench.main(tiny_args(tmp_path / "nowhere", out)) == 1
    err = capsys.readouterr().err
    assert "bench: error:" in err
    assert "no train-images-idx3-ubyte[.gz]" in err
    assert "--data" in err
    assert out.read_text(encoding="utf-8") == "previous\n"


def test_unknown_model_is_rejected(tmp_path, capsys):
    data = write_fashion_like(tmp_path)
    out = tmp_path / "bench.json"
    assert bench.main([*tiny_args(data, out), "--models", "cnn,mlp"]) == 1
    assert "--models: unknown ['mlp']" in capsys.readouterr().err
    assert not out.exists()


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in `path`, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _source_of(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_bench_imports_nothing_a_bare_gpu_box_lacks():
    """The transitive imports of mlpipe.train.bench, read from the source: no MLflow, DVC, GX..."""
    seen: set[str] = set()
    third_party: dict[str, str] = {}
    queue = ["mlpipe", "mlpipe.train.bench"]
    while queue:
        module = queue.pop()
        path = _source_of(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "mlpipe":
                parts = name.split(".")
                queue += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, module)
    assert "mlpipe.train.engine" in seen
    extra = {top: where for top, where in third_party.items() if top not in ALLOWED_THIRD_PARTY}
    assert not extra, f"mlpipe.train.bench pulls in {extra} (package: imported by)"


def test_without_steps_the_budget_sets_them_and_the_spread_is_reported(tmp_path):
    data = write_fashion_like(tmp_path / "fmnist")
    args = [a for a in tiny_args(data, tmp_path / "b.json", "--throughput-only") if a]
    i = args.index("--steps")
    del args[i : i + 2]
    small = tmp_path / "small.json"
    assert bench.main([*args, "--out", str(small), "--throughput-seconds", "0.001"]) == 0
    tp = json.loads(small.read_text(encoding="utf-8"))["throughput"]["cnn"]
    assert tp["steps_per_epoch"] == 2  # the floor, whatever the machine
    assert tp["calibrated_seconds_per_step"] > 0
    assert tp["images_per_epoch"] == 2 * 32
    spread = tp["ratio_spread"]
    assert spread["min"] <= spread["q1"] <= spread["median"] <= spread["q3"] <= spread["max"]
    assert spread["median"] == pytest.approx(tp["ratio"])
    big = tmp_path / "big.json"
    assert bench.main([*args, "--out", str(big), "--throughput-seconds", "1e6"]) == 0
    tp = json.loads(big.read_text(encoding="utf-8"))["throughput"]["cnn"]
    assert tp["steps_per_epoch"] == 6  # capped by the data: 192 train images, batch 32
    assert tp["images_per_epoch"] == 192


def test_streaming_against_in_memory_is_reported(tmp_path, capsys):
    """The ratio of issue 14's budget, on synthetic data of Fashion-MNIST's size (no files)."""
    out = tmp_path / "bench.json"
    args = tiny_args(tmp_path / "nowhere", out, "--synthetic", "--train-limit", "96")
    assert bench.main([*args, "--streaming-only", "--streaming", "--stream-workers", "1"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["data"]["path"] == "synthetic"
    assert report["throughput"] == report["time_to_accuracy"] == {}
    st = report["streaming"]["cnn"]
    assert st["images_per_epoch"] == 64 and st["shards"] == 1 and st["loader_workers"] == 1
    assert st["ratio"] > 0 and st["cpu_time_ratio"] > 0 and st["budget"] == 0.9
    assert st["ratio_spread"]["median"] == pytest.approx(st["ratio"])
    assert "streamed" in capsys.readouterr().out
