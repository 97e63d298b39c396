"""Benchmark the training engine: `python -m mlpipe.train.bench` (`make bench`).

1. Throughput: images/s of `fit` against a bare PyTorch loop (index a batch, forward,
   cross-entropy, backward, AdamW step) on the same model, data, device, batch size and
   precision, in the same run. Each loop runs one warm-up epoch and `--repeats` timed
   epochs of `--steps` batches, interleaved (engine, bare, engine, ...); the ratio is the
   median of the pairs', with its spread. Without `--steps`, the steps per epoch come from
   a time budget (`--throughput-seconds` per model) and the bare loop's measured time per
   step, so the three models compare in about 3 minutes even on a 2-core CPU. Both are
   clocked from outside, between the ends of consecutive epochs (the engine through its
   `on_epoch_end` callback, so its per-epoch work, a one-image validation included, counts).
2. Streaming: images/s of `fit` with the training split streamed from shards
   (`train.in_memory: false`, mlpipe.train.stream: the shards the pipeline writes, in a
   temporary folder) against `fit` with it in memory, same model, steps and batch size;
   `--repeats` pairs of two-epoch runs (the first epoch of each a warm-up), interleaved;
   the ratio is the median of the pairs'. Issue 14's budget: at least 0.9.
3. Time to accuracy: seconds of training until the test accuracy, measured after each
   epoch by an `on_epoch_end` callback, reaches the model's target; the evaluation is
   kept off the clock. Training stops at the first epoch that reaches it, else after
   `--max-epochs` (one one-cycle schedule over that many epochs).

Needs torch and numpy, plus what mlpipe.config and the engine import (omegaconf, PyYAML,
tqdm); never MLflow, DVC, Hydra, Great Expectations, scikit-learn or pandas, so it runs
on a bare GPU box. Fashion-MNIST comes from its four IDX files (`--data`), or with
`--synthetic` random images of its size (for throughput only: no time to accuracy).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mlpipe.dataset import ImageSplit, write_shards
from mlpipe.errors import ConfigError, DataError
from mlpipe.ingest.idx import FASHION_SPLITS, read_idx_pair
from mlpipe.io import atomic_write_json
from mlpipe.models import ARCHITECTURES, build_model
from mlpipe.preprocess.normalize import channel_stats
from mlpipe.runner import run_stage
from mlpipe.train.config import DeviceChoice, Precision, Schedule, TrainConfig
from mlpipe.train.device import Runtime, resolve_runtime, seed_everything
from mlpipe.train.engine import DataSource, EpochStats, TensorData, evaluate_loss_accuracy, fit
from mlpipe.train.stream import StreamSplit

log = logging.getLogger("mlpipe.train.bench")  # not __name__: "__main__" under -m

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
EVAL_BATCH = 1024


@dataclass
class Recipe:
    """Per-architecture training settings for the time-to-accuracy run."""

    target: float  # test accuracy to reach
    lr: float
    weight_decay: float
    label_smoothing: float = 0.0
    warmup_fraction: float = 0.15


RECIPES = {
    "cnn": Recipe(target=0.93, lr=3e-3, weight_decay=1e-4),
    "resnet": Recipe(target=0.93, lr=2e-3, weight_decay=5e-4, label_smoothing=0.1),
    "vit": Recipe(target=0.90, lr=1e-3, weight_decay=0.05, warmup_fraction=0.1),
}


class _TargetReached(Exception):
    """Raised by the epoch callback to end `fit` once the target accuracy is reached."""


# --- data ------------------------------------------------------------------


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"{folder}: no {stem}[.gz]; pass --data with a folder holding the four Fashion-MNIST "
        "IDX files (Debian: apt-get install dataset-fashion-mnist)"
    )


def load_split(folder: Path, split: str, limit: int | None) -> TensorData:
    images, labels = (find_idx(folder, stem) for stem in FASHION_SPLITS[split])
    data = read_idx_pair(images, labels)
    n = len(data) if limit is None else min(limit, len(data))
    return TensorData(torch.from_numpy(data.images[:n]), torch.from_numpy(data.labels[:n]))


def synthetic_split(n: int, seed: int) -> TensorData:
    """Fashion-MNIST's shape without its files: (n, 1, 28, 28) uint8, 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    noise = torch.randint(0, 60, (n, 1, 28, 28), generator=generator)
    return TensorData((labels.view(n, 1, 1, 1) * 20 + noise).to(torch.uint8), labels)


# --- models and configs ----------------------------------------------------


def make_model(arch: str, train: TensorData) -> nn.Module:
    mean, std = channel_stats(train.images.cpu().numpy())
    num_classes = int(train.labels.max().item()) + 1
    cfg = ARCHITECTURES[arch].config()
    return build_model(cfg, train.images.shape[1], num_classes, mean, std)


def train_config(args: argparse.Namespace, **values: Any) -> TrainConfig:
    return TrainConfig(batch_size=args.batch_size, seed=args.seed, **values)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- throughput ------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class BareLoop:
    """The minimal loop the engine is measured against, one epoch per call."""

    def __init__(
        self, model: nn.Module, data: TensorData, cfg: TrainConfig, runtime: Runtime
    ) -> None:
        self.model = model.to(runtime.device)
        self.data, self.batch_size, self.runtime = data, cfg.batch_size, runtime
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def epoch(self) -> float:
        """Train one epoch; its seconds, up to the last step's completion."""
        start = time.perf_counter()
        self.model.train()
        order = torch.randperm(len(self.data), generator=self.generator)
        for idx in torch.split(order.to(self.runtime.device), self.batch_size):
            with self.runtime.autocast():
                logits = self.model(self.data.images[idx])
                loss = F.cross_entropy(logits.float(), self.data.labels[idx])
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            self.optimizer.step()
        sync(self.runtime.device)
        return time.perf_counter() - start


def paired_epochs(
    model: nn.Module, bare: BareLoop, cfg: TrainConfig, runtime: Runtime
) -> tuple[list[float], list[float], list[float]]:
    """Seconds of each engine epoch and of a bare epoch run right after it, warm-up dropped.

    The bare epoch runs inside the engine's epoch callback, so each pair sees the same
    machine load; the engine's clock pauses meanwhile. Also the engine's own img/s.
    """
    engine_s: list[float] = []
    bare_s: list[float] = []
    reported: list[float] = []
    resumed = time.perf_counter()

    def on_epoch_end(stats: EpochStats) -> None:
        nonlocal resumed
        engine_s.append(time.perf_counter() - resumed)
        reported.append(stats.images_per_second)
        bare_s.append(bare.epoch())
        resumed = time.perf_counter()

    one_image = TensorData(bare.data.images[:1], bare.data.labels[:1])
    fit(model, bare.data, one_image, cfg, runtime, on_epoch_end=on_epoch_end)
    return engine_s[1:], bare_s[1:], reported[1:]


def calibrate_steps(
    model: nn.Module,
    train: TensorData,
    cfg: TrainConfig,
    runtime: Runtime,
    seconds: float,
    epochs: int,
) -> tuple[int, float]:
    """Batches per timed epoch so that `epochs` engine and `epochs` bare epochs take about
    `seconds` in all, from the bare loop's time per step (one warm-up pass, then timed);
    at least 2. Also the seconds per step measured."""
    n = min(len(train), 2 * cfg.batch_size)
    probe = BareLoop(
        copy.deepcopy(model), TensorData(train.images[:n], train.labels[:n]), cfg, runtime
    )
    probe.epoch()  # warm-up: allocations, kernels
    per_step = probe.epoch() / max(1, -(-n // cfg.batch_size))
    return max(2, int(seconds / (2 * epochs) / per_step)), per_step


def spread(values: list[float]) -> dict[str, float]:
    """Min, quartiles and max: how far the interleaved pairs agree."""
    if len(values) < 2:
        return {
            "min": values[0],
            "q1": values[0],
            "median": values[0],
            "q3": values[0],
            "max": values[0],
        }
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": min(values), "q1": q1, "median": median, "q3": q3, "max": max(values)}


def measure_throughput(
    arch: str, train: TensorData, runtime: Runtime, args: argparse.Namespace
) -> dict[str, Any]:
    # the bare loop's maths: constant lr, no clipping, no label smoothing
    cfg = train_config(
        args,
        epochs=args.repeats + 1,
        lr=1e-3,
        schedule=Schedule.constant,
        warmup_fraction=0.0,
        grad_clip=None,
        label_smoothing=0.0,
    )
    seed_everything(args.seed)
    model = make_model(arch, train)
    steps, per_step = args.steps, None
    if steps is None:  # a time budget: the same ratio quality on a slow CPU, in minutes
        steps, per_step = calibrate_steps(
            model, train, cfg, runtime, args.throughput_seconds, args.repeats + 1
        )
        log.info("%s: %.3f s per step: %d steps per timed epoch", arch, per_step, steps)
    steps = min(steps, -(-len(train) // args.batch_size))  # no more than the data holds
    n = steps * args.batch_size
    data = TensorData(train.images[:n], train.labels[:n])
    bare_model = copy.deepcopy(model)  # the same initial weights
    if args.compile:
        bare_model = torch.compile(bare_model)  # type: ignore[assignment]
    engine_s, bare_s, reported = paired_epochs(
        model, BareLoop(bare_model, data, cfg, runtime), cfg, runtime
    )
    engine = [len(data) / s for s in engine_s]
    bare = [len(data) / s for s in bare_s]
    ratios = [e / b for e, b in zip(engine, bare, strict=True)]
    return {
        "params": count_parameters(model),
        "steps_per_epoch": steps,
        "calibrated_seconds_per_step": per_step,
        "images_per_epoch": len(data),
        "timed_epochs": args.repeats,
        "engine_images_per_second": statistics.median(engine),
        "bare_images_per_second": statistics.median(bare),
        # each bare epoch runs right after an engine epoch: the pairs share the machine's load
        "ratio": statistics.median(ratios),
        "ratio_spread": spread(ratios),
        "ratio_of_medians": statistics.median(engine) / statistics.median(bare),
        "engine_runs": engine,
        "bare_runs": bare,
        "engine_reported_images_per_second": statistics.median(reported),
    }


# --- streaming ---------------------------------------------------------------


def epoch_seconds(
    model: nn.Module, train: DataSource, val: TensorData, cfg: TrainConfig, runtime: Runtime
) -> tuple[float, float]:
    """Wall and CPU seconds (this process) of `fit`'s last epoch, from the end of the one
    before (validation included). CPU time leaves out waiting for a busy machine's cores."""
    ends: list[tuple[float, float]] = []

    def on_epoch_end(_: EpochStats) -> None:
        ends.append((time.perf_counter(), time.process_time()))

    fit(model, train, val, cfg, runtime, on_epoch_end=on_epoch_end)
    return ends[-1][0] - ends[-2][0], ends[-1][1] - ends[-2][1]


def measure_streaming(
    arch: str, train: TensorData, runtime: Runtime, args: argparse.Namespace
) -> dict[str, Any]:
    """Streamed against in-memory training, the same steps of the same model."""
    cfg = train_config(args, epochs=2, lr=1e-3, schedule=Schedule.constant, warmup_fraction=0.0)
    seed_everything(args.seed)
    model = make_model(arch, train)
    steps = args.steps
    if steps is None:
        # the budget covers all the pairs: 2 runs of 2 epochs each
        steps, _ = calibrate_steps(
            model, train, cfg, runtime, args.throughput_seconds, 2 * args.repeats
        )
    steps = min(steps, -(-len(train) // args.batch_size))
    n = steps * args.batch_size
    images, labels = train.images[:n].cpu(), train.labels[:n].cpu()
    memory = TensorData(images, labels)
    val = TensorData(images[:1], labels[:1])
    ratios, cpu_ratios, stream_ips, memory_ips = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-") as tmp:
        split = write_shards(Path(tmp), "train", ImageSplit(images.numpy(), labels.numpy()))
        stream = StreamSplit(split, workers=args.stream_workers)
        for _ in range(args.repeats):
            m_wall, m_cpu = epoch_seconds(copy.deepcopy(model), memory, val, cfg, runtime)
            s_wall, s_cpu = epoch_seconds(copy.deepcopy(model), stream, val, cfg, runtime)
            memory_ips.append(n / m_wall)
            stream_ips.append(n / s_wall)
            ratios.append(m_wall / s_wall)
            cpu_ratios.append(m_cpu / s_cpu)
    return {
        "steps_per_epoch": steps,
        "images_per_epoch": n,
        "shards": len(split.shards),
        "loader_workers": args.stream_workers,
        "in_memory_images_per_second": statistics.median(memory_ips),
        "streaming_images_per_second": statistics.median(stream_ips),
        "ratio": statistics.median(ratios),
        "ratio_spread": spread(ratios),
        # this process's CPU seconds: steadier on a shared machine; leaves out the workers'
        "cpu_time_ratio": statistics.median(cpu_ratios),
        "cpu_time_ratio_spread": spread(cpu_ratios),
        "budget": STREAMING_BUDGET,
    }


STREAMING_BUDGET = 0.9  # issue 14: streamed at least 0.9x the in-memory throughput


# --- time to accuracy ------------------------------------------------------


def measure_time_to_accuracy(
    arch: str, train: TensorData, test: TensorData, runtime: Runtime, args: argparse.Namespace
) -> dict[str, Any]:
    recipe = RECIPES[arch]
    cfg = train_config(
        args,
        epochs=args.max_epochs,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        label_smoothing=recipe.label_smoothing,
        warmup_fraction=recipe.warmup_fraction,
        schedule=Schedule.onecycle,
        grad_clip=1.0,
    )
    seed_everything(args.seed)
    model = make_model(arch, train)
    rows: list[dict[str, float]] = []
    on_epoch_end = _accuracy_callback(model, test, runtime, recipe.target, rows)
    val = TensorData(test.images[: args.batch_size], test.labels[: args.batch_size])
    with contextlib.suppress(_TargetReached):
        fit(model, train, val, cfg, runtime, on_epoch_end=on_epoch_end)
    best = max(rows, key=lambda r: r["test_accuracy"])
    reached = next((r for r in rows if r["test_accuracy"] >= recipe.target), None)
    return {
        "target": recipe.target,
        "reached": reached is not None,
        "seconds": reached["train_seconds"] if reached else None,
        "epoch": int(reached["epoch"]) if reached else None,
        "best_accuracy": best["test_accuracy"],
        "best_epoch": int(best["epoch"]),
        "max_epochs": args.max_epochs,
        "recipe": dataclasses.asdict(recipe),
        "epochs": rows,
    }


def _accuracy_callback(
    model: nn.Module,
    test: TensorData,
    runtime: Runtime,
    target: float,
    rows: list[dict[str, float]],
) -> Callable[[EpochStats], None]:
    """Evaluate on `test` after each epoch with the evaluation off the training clock.

    The clock runs from the start of `fit` (its set-up and warm-up count) to each
    callback, and resumes when the callback returns.
    """
    total, resumed = 0.0, time.perf_counter()

    def on_epoch_end(stats: EpochStats) -> None:
        nonlocal total, resumed
        total += time.perf_counter() - resumed
        _, accuracy = evaluate_loss_accuracy(model, test, EVAL_BATCH, runtime)
        rows.append(
            {
                "epoch": stats.epoch,
                "train_seconds": total,
                "test_accuracy": accuracy,
                "engine_seconds": stats.seconds,
            }
        )
        log.info("epoch %d: test accuracy %.4f after %.1f s", stats.epoch, accuracy, total)
        if accuracy >= target:
            raise _TargetReached
        resumed = time.perf_counter()

    return on_epoch_end


# --- report ----------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    head = (
        f"mlpipe bench: {report['device']}, {report['precision']}, torch {report['torch']}, "
        f"{report['threads']} threads, batch {report['batch_size']}, compile {report['compile']}"
    )
    columns = f"{'model':8}{'params':>12}{'engine img/s':>14}{'bare img/s':>12}{'engine/bare':>13}"
    lines = [head, f"{columns}  time to accuracy"]
    for arch in report["models"]:
        tp = report["throughput"].get(arch)
        cells = (
            f"{tp['params']:>12,}{tp['engine_images_per_second']:>14,.0f}"
            f"{tp['bare_images_per_second']:>12,.0f}{tp['ratio']:>13.3f}"
            if tp
            else f"{'-':>12}{'-':>14}{'-':>12}{'-':>13}"
        )
        lines.append(f"{arch:8}{cells}  {_describe_tta(report['time_to_accuracy'].get(arch))}")
        st = report.get("streaming", {}).get(arch)
        if st:
            lines.append(
                f"{arch:8}streamed {st['streaming_images_per_second']:,.0f} img/s, in memory "
                f"{st['in_memory_images_per_second']:,.0f}: ratio {st['ratio']:.3f} "
                f"(budget >= {st['budget']})"
            )
    return "\n".join(lines)


def _describe_tta(tta: dict[str, Any] | None) -> str:
    if tta is None:
        return "-"
    if tta["reached"]:
        return f"{tta['target']:.2f} in {tta['seconds']:.1f} s (epoch {tta['epoch']})"
    return (
        f"{tta['target']:.2f} not reached in {tta['max_epochs']} epochs "
        f"(best {tta['best_accuracy']:.4f}, epoch {tta['best_epoch']})"
    )


# --- entry point -----------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlpipe.train.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", default=None, help="comma-separated; default cnn on CPU, all on GPU")
    p.add_argument("--device", default="auto", choices=[d.value for d in DeviceChoice])
    p.add_argument("--precision", default="auto", choices=[d.value for d in Precision])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--throughput-only", action="store_true")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="random images of Fashion-MNIST's size instead of --data (throughput only)",
    )
    p.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure training streamed from shards against in memory",
    )
    p.add_argument(
        "--streaming-only",
        action="store_true",
        help="only the streamed against in-memory comparison",
    )
    p.add_argument(
        "--stream-workers",
        type=int,
        default=None,
        help="DataLoader workers of the streamed run (default: train.loader_workers' null)",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="default 10 on CPU, 30 on GPU")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N train images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="batches per timed throughput epoch (default: from --throughput-seconds)",
    )
    p.add_argument(
        "--throughput-seconds",
        type=float,
        default=50.0,
        help="about how long each model's throughput comparison may take (default 50)",
    )
    p.add_argument("--repeats", type=int, default=7, help="timed throughput epochs (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Fashion-MNIST IDX folder")
    p.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    return p.parse_args(argv)


def resolve_defaults(args: argparse.Namespace, runtime: Runtime) -> None:
    on_gpu = runtime.device.type == "cuda"
    models = args.models or ("cnn,resnet,vit" if on_gpu else "cnn")
    args.models = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in RECIPES or m not in ARCHITECTURES]
    if unknown or not args.models:
        raise ConfigError(f"--models: unknown {unknown or models!r} (known: cnn, resnet, vit)")
    args.max_epochs = args.max_epochs or (30 if on_gpu else 10)
    for key in ("max_epochs", "batch_size", "steps", "repeats", "throughput_seconds"):
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            raise ConfigError(f"--{key.replace('_', '-')}: must be > 0")


def run(args: argparse.Namespace) -> dict[str, Any]:
    runtime = resolve_runtime(
        DeviceChoice(args.device), Precision(args.precision), args.num_threads, compile=args.compile
    )
    resolve_defaults(args, runtime)
    if args.synthetic:
        args.throughput_only = True  # nothing to learn from noise
        train = synthetic_split(args.train_limit or 60000, args.seed).to(runtime.device)
        test = synthetic_split(args.test_limit or 10000, args.seed + 1).to(runtime.device)
    else:
        train = load_split(args.data, "train", args.train_limit).to(runtime.device)
        test = load_split(args.data, "test", args.test_limit).to(runtime.device)
    report: dict[str, Any] = {
        "device": str(runtime.device),
        "precision": runtime.precision_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "compile": "on" if args.compile else "off",
        "data": {
            "path": "synthetic" if args.synthetic else str(args.data),
            "train": len(train),
            "test": len(test),
        },
        "models": args.models,
        "throughput": {},
        "streaming": {},
        "time_to_accuracy": {},
    }
    for arch in args.models:
        if not args.streaming_only:
            log.info("%s: throughput, engine against the bare loop", arch)
            report["throughput"][arch] = measure_throughput(arch, train, runtime, args)
        if args.streaming:
            log.info("%s: streamed from shards against in memory", arch)
            report["streaming"][arch] = measure_streaming(arch, train, runtime, args)
        if not (args.throughput_only or args.streaming_only):
            log.info("%s: time to %.2f test accuracy", arch, RECIPES[arch].target)
            tta = measure_time_to_accuracy(arch, train, test, runtime, args)
            report["time_to_accuracy"][arch] = tta
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        report = run(args)
        atomic_write_json(args.out, report)
        sys.stdout.write(format_table(report) + "\n")
        log.info("wrote %s", args.out)

    return run_stage("bench", body)


if __name__ == "__main__":
    sys.exit(main())
