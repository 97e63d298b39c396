"""`make bench-tune`: what the tuner costs and what pruning saves, on the digits data.

1. Overhead per trial: the same configurations trained directly (`train_trial` on a
   composed config) and as trials of a study (ask, compose, MLflow child run, per-epoch
   reports, storage writes, tell), interleaved; the ratio of the medians.
2. Pruning: the same search (random sampler, same seed) with the median pruner and with
   none; trials per hour of each, and the best value each found.

Everything runs in a temporary folder (Optuna SQLite storage, MLflow SQLite store).
    python -m mlpipe.tune.bench [--pairs 5] [--trials 20] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

from mlpipe.compose import compose_checked
from mlpipe.config import load_section
from mlpipe.dataset import ImageDataset
from mlpipe.ingest.config import DataConfig
from mlpipe.ingest.sources import load_source
from mlpipe.io import atomic_write_json
from mlpipe.preprocess.config import PreprocessConfig
from mlpipe.preprocess.split import make_processed
from mlpipe.runner import configure_logging
from mlpipe.tune.config import parse_space
from mlpipe.tune.study import Objective, open_storage
from mlpipe.tune.trial import train_trial, trial_config


def digits(root: Path) -> ImageDataset:
    params = yaml.safe_load(compose_checked(root, ["data=digits"]))
    data = load_section(params, "data", DataConfig)
    split = load_section(params, "preprocess", PreprocessConfig)
    return make_processed(load_source(data), split.val_fraction, split.split_seed)


def space(epochs: int, trials: int, pruner: str) -> Any:
    raw = {
        "trials": trials, "sampler": "random", "seed": 0, "pruner": pruner,
        "startup_trials": 3, "warmup_epochs": 1,
        "fixed": ["train=smoke", "runtime=cpu", f"train.epochs={epochs}"],
        "space": {
            "train.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.4},
        },
    }  # fmt: skip
    return parse_space(raw, Path(f"bench-{pruner}"))


def study_for(tmp: Path, name: str, sp: Any, root: Path, data: ImageDataset) -> tuple[Any, Any]:
    from mlpipe.tracking import tuning

    storage = open_storage(f"sqlite:///{tmp / 'optuna.db'}", sp)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=sp.seed),
        pruner=optuna.pruners.MedianPruner(sp.startup_trials, sp.warmup_epochs)
        if sp.pruner == "median" else optuna.pruners.NopPruner(),
    )  # fmt: skip
    parent = tuning.study_run("bench-tune", name, {"pruner": sp.pruner})
    return study, Objective(root, sp, data, parent, name)


def overhead(tmp: Path, root: Path, data: ImageDataset, pairs: int, epochs: int) -> dict[str, Any]:
    sp = space(epochs, pairs, "none")
    study, objective = study_for(tmp, "overhead", sp, root, data)
    direct, tuned = [], []
    for i in range(pairs):
        params = {"train.lr": 10 ** (-3.5 + 0.25 * i), "model.dropout": 0.1}
        cfg = trial_config(root, sp.overrides(params))
        start = time.perf_counter()
        train_trial(cfg, data, None)
        direct.append(time.perf_counter() - start)
        study.enqueue_trial(params)
        start = time.perf_counter()
        study.optimize(objective, n_trials=1)
        tuned.append(time.perf_counter() - start)
    extra = [t - d for t, d in zip(tuned, direct, strict=True)]
    return {
        "pairs": pairs,
        "epochs": epochs,
        "direct_seconds": [round(s, 3) for s in direct],
        "trial_seconds": [round(s, 3) for s in tuned],
        "overhead_seconds_median": round(statistics.median(extra), 3),
        "ratio": round(statistics.median(tuned) / statistics.median(direct), 4),
    }


def pruning(tmp: Path, root: Path, data: ImageDataset, trials: int, epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": trials, "epochs": epochs}
    for pruner in ("none", "median"):
        sp = space(epochs, trials, pruner)
        study, objective = study_for(tmp, f"pruning-{pruner}", sp, root, data)
        start = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        seconds = time.perf_counter() - start
        states = [t.state.name for t in study.trials]
        out[pruner] = {
            "seconds": round(seconds, 1),
            "trials_per_hour": round(trials * 3600 / seconds),
            "pruned": states.count("PRUNED"),
            "best_val_accuracy": round(study.best_value, 4),
        }
    out["trials_per_hour_saved"] = out["median"]["trials_per_hour"] - out["none"]["trials_per_hour"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlpipe.tune.bench", description=__doc__)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("reports/bench_tune.json"))
    args = p.parse_args(argv)
    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path.cwd()
    data = digits(root)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        report = {
            "overhead": overhead(Path(tmp), root, data, args.pairs, args.epochs),
            "pruning": pruning(Path(tmp), root, data, args.trials, args.epochs),
        }
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
