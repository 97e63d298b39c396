"""`make bench-data`: memory and speed of the stages on image folders of real size.

For each size (5,000 and 40,000 by default; `--quick`: 300 and 1,200) it writes that many
96x96 RGB PNG files (10 classes, smooth colour patterns plus noise, about 20 KB each) into
a temporary folder, then runs, each as its own process, as `dvc repro` would:

- `manifest`, `ingest`, `validate`, `preprocess` (pipelines/<stage>.py, data=imagefolder at
  96x96x3, `data.workers` = --workers), then `train` for one epoch of train=smoke-sized
  steps (batch 64; model cnn with `stem_stride: 2`) streamed from the shards
  (`train.in_memory: false`), `evaluate` on its model and `register` (reported, not
  budgeted), each logging to a SQLite MLflow store in the work folder; last `train_auto`,
  the same training with the default `in_memory: auto` (reported, not budgeted: it holds
  train + val in memory when they fit half the free RAM, as designed). Each runs under a
  small runner that reports the stage's peak RSS: the largest process (`ru_maxrss` of its
  children, so a pool worker counts if it is the largest) and the whole process tree (sum
  of PSS over the stage and its workers, sampled every 50 ms; PSS shares pages that fork
  leaves shared);
- a bare loop: the same files decoded and resized with Pillow by a Pool of as many
  processes (`imap` over chunks, pixels sent back to the parent and dropped), timed as a
  process from start to end like the ingest stage; bare and ingest runs alternate
  (--repeats each) and the best of each gives the throughput ratio.

reports/bench_data.json gets every figure and the budget ratios: peak RSS at the largest
size over the smallest (<= 1.3), the largest peak (<= 1.5 GB), ingest throughput over the
bare loop's (>= 0.8). The runner needs numpy, Pillow and PyYAML only (the stages bring
their own imports).

    python -m mlpipe.ingest.bench [--quick] [--sizes 5000,40000] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from mlpipe.io import atomic_write_json
from mlpipe.runner import configure_logging

log = logging.getLogger("mlpipe.ingest.bench")
ROOT = Path(__file__).resolve().parents[3]
SIZE = 96
CLASSES = 10
CHUNK = 64
BUDGET_GB = 1.5
BUDGET_GROWTH = 1.3
BUDGET_THROUGHPUT = 0.8
# reported, not budgeted: the manifest (a listing of the folder; tens of MB), register (not
# in the list: it holds the test split, on which it scores the champion) and
# training with `in_memory: auto`, which by design holds train + val in memory when they fit
UNBUDGETED = ("manifest", "register", "train_auto")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench-data", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,40000", help="image counts, smallest first")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (300,1200)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    parser.add_argument("--repeats", type=int, default=3, help="ingest and bare runs, best of")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_data.json"))
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a tmp dir)")
    # internal: the runner that measures one stage, and the bare decoding loop
    parser.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the images ------------------------------------------------------------


def make_image(index: int) -> np.ndarray:
    """A 96x96 RGB image of class index % 10: a smooth colour pattern plus noise."""
    rng = np.random.default_rng(index)
    label = index % CLASSES
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = [np.sin((label + 1 + c) * np.pi * (x + y * c / 2) + phase[c]) for c in range(3)]
    pattern = (np.stack(base, axis=-1) + 1) * 100
    noise = rng.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(pattern + noise, 0, 255).astype(np.uint8)


def write_one(job: tuple[Path, int]) -> None:
    folder, index = job
    path = folder / f"class{index % CLASSES}" / f"{index:06d}.png"
    Image.fromarray(make_image(index)).save(path, compress_level=1)


def write_images(folder: Path, n: int, workers: int) -> None:
    """n PNG files under folder/class<k>/."""
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(workers) as pool:
        for _ in pool.imap_unordered(write_one, [(folder, i) for i in range(n)], chunksize=64):
            pass


# --- the bare loop ---------------------------------------------------------


def bare_chunk(files: list[Path]) -> np.ndarray:
    out = []
    for path in files:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        out.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def bare_loop(folder: Path, workers: int) -> int:
    files = sorted(folder.rglob("*.png"))
    chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
    n = 0
    with multiprocessing.Pool(workers) as pool:
        for pixels in pool.imap(bare_chunk, chunks):
            n += len(pixels)
    return n


# --- measuring a stage -----------------------------------------------------


def tree_pss_kb(pid: int) -> int:
    """Sum of PSS (kB) over `pid` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            with open(f"/proc/{current}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def measure(cmd: list[str]) -> int:
    """Run `cmd`; print one JSON line: exit code, wall time, peak RSS (largest process)
    and peak PSS of the process tree. Run in a fresh process per stage, so that
    RUSAGE_CHILDREN is that stage's."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    line = {
        "code": code,
        "wall_s": wall,
        "max_rss_mb": maxrss_kb / 1024,
        "tree_pss_mb": peak[0] / 1024,
    }
    print("MEASURED " + json.dumps(line), flush=True)
    return code


def measured(cmd: list[str], cwd: Path) -> dict[str, Any]:
    runner = [sys.executable, "-m", "mlpipe.ingest.bench", "--measure", *cmd]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(runner, cwd=cwd, env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("MEASURED ")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)}: no measurement:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("MEASURED "))
    if result["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    # train says where its data lives ("training data (0.93 GiB of pixels) streamed ...")
    said = [x for x in proc.stderr.splitlines() if "training data (" in x]
    if said:
        result["data"] = said[-1].split("training data ", 1)[1]
    return result


# --- one size --------------------------------------------------------------


def write_params(work: Path, images: Path, workers: int) -> dict[str, str]:
    """params.yaml for the stages, and params_auto.yaml: the same with train.in_memory auto.

    data=imagefolder at 96x96x3; model cnn with `stem_stride: 2` (the README's setting for
    about 64 px and up); train=smoke's steps (batch 64, warm-up 0.2) for one epoch, with
    the training data streamed from the shards (`in_memory: false`)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = yaml.safe_load((ROOT / "conf/data/imagefolder.yaml").read_text())
    data.update(path=str(images), image_size=SIZE, channels=3, workers=workers)
    params["data"] = data
    params["model"] = {
        **yaml.safe_load((ROOT / "conf/model/cnn.yaml").read_text()),
        "stem_stride": 2,
    }
    smoke = yaml.safe_load((ROOT / "conf/train/smoke.yaml").read_text())
    smoke.pop("defaults", None)
    params["train"].update(smoke, epochs=1, in_memory="false")
    paths = {}
    for name, in_memory in (("params.yaml", "false"), ("params_auto.yaml", "auto")):
        params["train"]["in_memory"] = in_memory
        path = work / name
        path.write_text(yaml.safe_dump(params))
        paths[in_memory] = str(path)
    return paths


def train_cmd(params: str, suffix: str = "") -> list[str]:
    return [
        sys.executable, "-m", "pipelines.train", "--params", params, "--data", "processed",
        "--model-dir", f"models{suffix}", "--report", f"train{suffix}.json",
        "--curves", f"curves{suffix}.csv", "--validation", "validate.json",
    ]  # fmt: skip


def run_size(work: Path, n: int, workers: int, repeats: int) -> dict[str, Any]:
    images = work / "images"
    start = time.perf_counter()
    if len(list(images.rglob("*.png"))) != n:  # --keep: a folder from an earlier run is reused
        shutil.rmtree(images, ignore_errors=True)
        write_images(images, n, workers)
    megabytes = sum(p.stat().st_size for p in images.rglob("*.png")) / 1e6
    log.info("%d images: %.0f MB of PNG in %.1f s", n, megabytes, time.perf_counter() - start)
    params_files = write_params(work, images, workers)
    params = params_files["false"]
    py = sys.executable
    stages = {
        "manifest": [py, "-m", "pipelines.manifest", "--params", params, "--out", "manifest.json"],
        "ingest": [py, "-m", "pipelines.ingest", "--params", params, "--out", "raw"],
        "validate": [
            py, "-m", "pipelines.validate", "--params", params, "--raw", "raw",
            "--report", "validate.json",
        ],
        "preprocess": [
            py, "-m", "pipelines.preprocess", "--params", params, "--raw", "raw",
            "--validation", "validate.json", "--out", "processed",
        ],
        "train": train_cmd(params),
        "evaluate": [
            py, "-m", "pipelines.evaluate", "--params", params, "--data", "processed",
            "--model-dir", "models", "--train-report", "train.json",
            "--report", "evaluate.json", "--details", "evaluate_details.json",
            "--plots", "plots",
        ],
        "register": [
            py, "-m", "pipelines.register", "--params", params, "--train-report", "train.json",
            "--evaluate-report", "evaluate_details.json", "--predictions",
            "plots/predictions.csv", "--data", "processed", "--model-dir", "models",
            "--lock", "dvc.lock", "--out", "register.json", "--monitor-dir", "models/monitor",
        ],
        # not budgeted: auto holds train + val in memory when they fit half the free RAM
        "train_auto": train_cmd(params_files["auto"], "_auto"),
    }  # fmt: skip
    result: dict[str, Any] = {"images": n, "png_mb": round(megabytes, 1), "stages": {}}
    for name, cmd in stages.items():
        figures = measured(cmd, work)
        result["stages"][name] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items() if k != "code"
        }
        log.info("%d images, %s: %s", n, name, result["stages"][name])
    # throughput: the bare loop and ingest again, interleaved, best of `repeats` each (the
    # machine may be shared: the best run is the one least disturbed)
    bare_cmd = [py, "-m", "mlpipe.ingest.bench", "--bare", str(images), "--workers", str(workers)]
    bare_s, ingest_s = [], [result["stages"]["ingest"]["wall_s"]]
    for i in range(repeats):
        bare_s.append(measured(bare_cmd, work)["wall_s"])
        if i < repeats - 1:
            ingest_s.append(measured(stages["ingest"], work)["wall_s"])
    result["ingest_wall_s"] = [round(x, 3) for x in ingest_s]
    result["bare_wall_s"] = [round(x, 3) for x in bare_s]
    ingest_rate, bare_rate = n / min(ingest_s), n / min(bare_s)
    result["ingest_images_per_s"] = round(ingest_rate, 1)
    result["bare_images_per_s"] = round(bare_rate, 1)
    result["ingest_vs_bare"] = round(ingest_rate / bare_rate, 3)
    log.info("%d images: ingest %.0f/s, bare %.0f/s", n, ingest_rate, bare_rate)
    return result


def budgets(results: list[dict[str, Any]]) -> dict[str, Any]:
    small, large = results[0], results[-1]
    out: dict[str, Any] = {}
    for stage in large["stages"]:  # every stage, though the budgets leave some out
        for key in ("max_rss_mb", "tree_pss_mb"):
            a, b = small["stages"][stage][key], large["stages"][stage][key]
            out[f"{stage}.{key}.growth"] = round(b / a, 3)
    budgeted = {k: v for k, v in large["stages"].items() if k not in UNBUDGETED}
    peak = max(s["tree_pss_mb"] for s in budgeted.values())  # the budget: 1.5 GB
    growth = max(out[f"{stage}.tree_pss_mb.growth"] for stage in budgeted)
    out["peak_tree_pss_gb"] = round(peak / 1024, 3)
    out["peak_stage"] = max(budgeted, key=lambda k: budgeted[k]["tree_pss_mb"])
    out["max_growth"] = growth
    out["ok_peak"] = peak / 1024 <= BUDGET_GB
    out["ok_growth"] = growth <= BUDGET_GROWTH
    out["ok_ingest_throughput"] = all(r["ingest_vs_bare"] >= BUDGET_THROUGHPUT for r in results)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        return measure(args.measure)
    workers = args.workers or os.cpu_count() or 1
    if args.bare:
        bare_loop(args.bare, workers)
        return 0
    configure_logging()
    sizes = [300, 1200] if args.quick else [int(s) for s in args.sizes.split(",")]
    base = args.keep or Path(tempfile.mkdtemp(prefix="mlpipe-bench-data-"))
    results = []
    try:
        for n in sizes:
            work = base / str(n)
            work.mkdir(parents=True, exist_ok=True)
            results.append(run_size(work, n, workers, args.repeats))
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report = {
        "workers": workers,
        "cpus": os.cpu_count(),
        "image": f"{SIZE}x{SIZE}x3 PNG",
        "sizes": results,
        "budgets": budgets(results),
    }
    atomic_write_json(args.out, report)
    log.info("wrote %s: %s", args.out, json.dumps(report["budgets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
