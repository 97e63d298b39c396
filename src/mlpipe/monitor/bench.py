"""How well `mlpipe monitor` works: `python -m mlpipe.monitor.bench` (`make bench-monitor`).

On Fashion-MNIST, with a model (a CNN trained here for one epoch on the first 20,000
train images, or `--checkpoint`) and its reference built as the register stage builds it
(from held-out training images: the last 10,000), it draws random batches and runs the
monitor's tests on them:

- false-alarm rate: batches of held-out test images (no shift), `--null-trials` per size;
- detection rate: batches of shifted test images, `--trials` per shift and size. Shifts:
  brightness (+10, +30), contrast (x0.8, x0.5 around each image's mean), rotation (5, 15
  degrees; and 0 degrees, the bilinear resampling alone, as a control), Gaussian noise
  (sigma 5, 20), and scikit-learn's 8x8 digits upsampled to 28x28.

Embeddings and pixel features of every image are computed once; a trial only samples
indices and runs the tests (`mlpipe.monitor.stats`), so the figures are those of the
monitor's statistics, without the data checks (Great Expectations) or MLflow. Needs
torch, numpy and scipy (Pillow and scikit-learn for the digits). Writes
reports/bench_monitor.json and prints a table.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mlpipe.dataset import ImageDataset, ImageSplit
from mlpipe.errors import DataError
from mlpipe.ingest.idx import FASHION_SPLITS, read_idx_pair
from mlpipe.io import atomic_write_json
from mlpipe.models import build_model, load_config
from mlpipe.models.checkpoint import load_checkpoint
from mlpipe.monitor.reference import Reference, build_reference, embed
from mlpipe.monitor.stats import detect_drift, pixel_features
from mlpipe.runner import run_stage

log = logging.getLogger("mlpipe.monitor.bench")
DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
HELD_OUT = 10_000  # the last train images: the reference's "validation split"


def load_fashion(folder: Path, split: str) -> ImageSplit:
    paths = []
    for stem in FASHION_SPLITS[split]:
        found = [folder / n for n in (stem, f"{stem}.gz") if (folder / n).is_file()]
        if not found:
            raise DataError(f"{folder}: no {stem}[.gz]; pass --data (the Fashion-MNIST IDX files)")
        paths.append(found[0])
    return read_idx_pair(paths[0], paths[1])


def quick_model(train: ImageSplit, seed: int) -> torch.nn.Module:
    """The pipeline's default CNN, one epoch of Adam: about 85% test accuracy."""
    torch.manual_seed(seed)
    x = torch.as_tensor(train.images).float()
    mean, std = float(x.mean() / 255), float(x.std() / 255)
    model = build_model(load_config({"model": {"arch": "cnn"}}), 1, 10, [mean], [std])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    y = torch.as_tensor(train.labels)
    order = torch.randperm(len(x))
    model.train()
    for i in range(0, len(x), 128):
        idx = order[i : i + 128]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model.eval()


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre (bilinear, zero fill), without torchvision."""
    x = torch.as_tensor(images).float()
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    x = images.astype(np.float64)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    out: np.ndarray = np.clip(np.round(mean + factor * (x - mean)), 0, 255).astype(np.uint8)
    return out


def digits_images(size: int) -> np.ndarray:
    from mlpipe.ingest.config import DataConfig, DataSource
    from mlpipe.ingest.sources import load_digits

    cfg = DataConfig(name="digits", source=DataSource.digits, image_size=size, channels=1,
                     class_names=[str(i) for i in range(10)])  # fmt: skip
    ds = load_digits(cfg)
    out: np.ndarray = np.concatenate([s.images for s in ds.splits.values()])
    return out


def shifted_sets(test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def brighter(k: int) -> np.ndarray:
        return np.clip(test.astype(int) + k, 0, 255).astype(np.uint8)  # type: ignore[no-any-return]

    def noisy(sigma: float) -> np.ndarray:
        return np.clip(np.round(test + rng.normal(0, sigma, test.shape)), 0, 255).astype(np.uint8)

    return {
        "brightness+10": brighter(10),
        "brightness+30": brighter(30),
        "contrast x0.8": contrast(test, 0.8),
        "contrast x0.5": contrast(test, 0.5),
        "resampled only (rotation 0deg)": rotate(test, 0),  # control: interpolation alone
        "rotation 5deg": rotate(test, 5),
        "rotation 15deg": rotate(test, 15),
        "noise sigma5": noisy(5),
        "noise sigma20": noisy(20),
        "digits (sklearn, upsampled)": digits_images(test.shape[-1]),
    }


def describe(ref: Reference, images: np.ndarray) -> dict[str, np.ndarray]:
    assert ref.probe is not None
    embeddings, predicted = embed(ref.probe, images)
    return {"pixels": pixel_features(images), "embeddings": embeddings, "predicted": predicted}


def alarm_rate(
    ref: Reference, sorted_ref: dict[str, np.ndarray], pool: dict[str, np.ndarray],
    size: int, trials: int, alpha: float, rng: np.random.Generator,
) -> tuple[float, dict[str, float]]:  # fmt: skip
    """Share of `trials` random batches of `size` from `pool` flagged; and by family."""
    k = len(ref.class_names)
    n = len(pool["predicted"])
    alarms, by_family = 0, {"pixels": 0, "embeddings": 0, "classes": 0}
    for _ in range(trials):
        idx = rng.choice(n, size=size, replace=size > n)
        batch = {name: pool[name][idx] for name in ("pixels", "embeddings")}
        counts = np.bincount(pool["predicted"][idx], minlength=k)
        result = detect_drift(sorted_ref, batch, (ref.class_counts, counts), alpha, presorted=True)
        alarms += result.drift
        for f in result.families:
            by_family[f.name] += bool(f.drifted)
    return alarms / trials, {name: c / trials for name, c in by_family.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.num_threads or torch.get_num_threads())
    started = time.perf_counter()
    train, test = load_fashion(args.data, "train"), load_fashion(args.data, "test")
    fit = ImageSplit(train.images[:-HELD_OUT], train.labels[:-HELD_OUT])
    held = ImageSplit(train.images[-HELD_OUT:], train.labels[-HELD_OUT:])
    model: torch.nn.Module
    if args.checkpoint is not None and args.checkpoint.is_file():
        model, _ = load_checkpoint(args.checkpoint)
        origin = str(args.checkpoint)
    else:
        model = quick_model(
            ImageSplit(fit.images[: args.train_images], fit.labels[: args.train_images]), args.seed
        )
        origin = f"cnn, 1 epoch on {min(args.train_images, len(fit))} train images"
    names = [str(i) for i in range(10)]
    if args.reference_from == "fitted":  # the images the quick model was trained on
        held = ImageSplit(fit.images[: args.train_images], fit.labels[: args.train_images])
    ref = build_reference(model, ImageDataset({"val": held}, names, "fashion-mnist"))
    sorted_ref = {
        "pixels": np.sort(ref.pixels, axis=0),
        "embeddings": np.sort(ref.embeddings, axis=0),
    }
    clean = describe(ref, test.images)
    accuracy = float((clean["predicted"] == test.labels).mean())
    shifts = {
        name: describe(ref, images) for name, images in shifted_sets(test.images, args.seed).items()
    }
    prepared = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    false_alarm: dict[str, Any] = {}
    detection: dict[str, dict[str, Any]] = {}
    for size in sizes:
        rate, fams = alarm_rate(ref, sorted_ref, clean, size, args.null_trials, args.alpha, rng)
        false_alarm[str(size)] = {"rate": rate, "trials": args.null_trials, "by_family": fams}
    for name, pool in shifts.items():
        detection[name] = {}
        for size in sizes:
            rate, fams = alarm_rate(ref, sorted_ref, pool, size, args.trials, args.alpha, rng)
            detection[name][str(size)] = {"rate": rate, "trials": args.trials, "by_family": fams}
    return {
        "alpha": args.alpha,
        "tests_per_batch": ref.pixels.shape[1] + ref.embeddings.shape[1] + 1,
        "model": origin,
        "model_test_accuracy": accuracy,
        "reference": {
            "images": len(ref.pixels),
            "from": f"last {HELD_OUT} train images"
            if args.reference_from == "held-out"
            else "the train images the model was fitted on",
        },
        "null_pool": f"{len(test.images)} test images",
        "false_alarm": false_alarm,
        "detection": detection,
        "seconds": {
            "prepare": round(prepared - started, 1),
            "trials": round(time.perf_counter() - prepared, 1),
        },
    }  # fmt: skip


def format_table(report: dict[str, Any]) -> str:
    sizes = list(report["false_alarm"])
    rows = [["batch size", *sizes]]
    rows.append(
        ["false alarms (no shift)", *(f"{report['false_alarm'][s]['rate']:.3f}" for s in sizes)]
    )
    for name, by_size in report["detection"].items():
        rows.append([f"detected: {name}", *(f"{by_size[s]['rate']:.2f}" for s in sizes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mlpipe.monitor.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Fashion-MNIST IDX folder")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a model.pt not trained on the last 10,000 train images "
                        "(default: a CNN trained here for one epoch)")  # fmt: skip
    p.add_argument("--train-images", type=int, default=20_000, help="for the quick model")
    p.add_argument("--reference-from", choices=["held-out", "fitted"], default="held-out",
                   help="fitted: build the reference from the quick model's own training "
                        "images (to see why the register stage does not)")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--sizes", default="20,50,100,200,500,1000", help="batch sizes")
    p.add_argument("--null-trials", type=int, default=300, help="no-shift batches per size")
    p.add_argument("--trials", type=int, default=50, help="shifted batches per shift and size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--out", type=Path, default=Path("reports/bench_monitor.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        report = run(args)
        atomic_write_json(args.out, report)
        print(format_table(report))
        log.info("wrote %s (model test accuracy %.3f)", args.out, report["model_test_accuracy"])

    return run_stage("bench-monitor", body)


if __name__ == "__main__":
    sys.exit(main())
