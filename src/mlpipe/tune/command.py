"""`mlpipe tune start|worker|show|apply`: a hyperparameter search with Optuna.

    mlpipe tune start --space default --trials 40 --workers 2   # creates the study, runs it
    mlpipe tune worker --study default-20261204-031500           # joins from another machine
    mlpipe tune show --study default-20261204-031500             # the best trials
    mlpipe tune apply --study default-20261204-031500            # conf/experiment/tuned.yaml
    dvc exp run -S experiment=tuned                              # the pipeline, with its gates

Storage: --storage URL, else $MLPIPE_TUNE_STORAGE, else sqlite:///<repo>/optuna.db.
Imports nothing heavy at module level (`mlpipe --help` stays fast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlpipe.errors import ConfigError, MlpipeError
from mlpipe.runner import error_line


def add_parser(groups: Any) -> None:
    tune = groups.add_parser("tune", help="hyperparameter search (Optuna, MLflow child runs)")
    tune.formatter_class = argparse.RawDescriptionHelpFormatter
    tune.description = __doc__
    verbs = tune.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", default=None, help="Optuna storage URL")
    common.add_argument("--root", type=Path, default=Path.cwd(), help="the repository")
    start = verbs.add_parser("start", parents=[common], help="create a study and run it")
    start.add_argument("--space", default="default", help="conf/tune/<space>.yaml, or a path")
    start.add_argument("--trials", type=int, default=None, help="default: the space's")
    start.add_argument("--workers", type=int, default=1, help="local worker processes")
    start.add_argument("--study", default=None, help="default: <space>-<UTC time>")
    worker = verbs.add_parser("worker", parents=[common], help="join a study's search")
    worker.add_argument("--study", required=True)
    worker.add_argument("--index", type=int, default=None, help=argparse.SUPPRESS)
    show = verbs.add_parser("show", parents=[common], help="the best trials as a table")
    show.add_argument("--study", required=True)
    show.add_argument("--top", type=int, default=10)
    apply = verbs.add_parser("apply", parents=[common], help="write the best trial to conf/")
    apply.add_argument("--study", required=True)
    apply.add_argument("--name", default="tuned", help="conf/experiment/<name>.yaml")


def main(args: argparse.Namespace) -> int:
    from mlpipe.runner import configure_logging

    configure_logging()
    try:
        VERBS[args.verb](args)
    except MlpipeError as exc:
        print(error_line(f"mlpipe tune {args.verb}", exc), file=sys.stderr)
        return 1
    return 0


def run_start(args: argparse.Namespace) -> None:
    from mlpipe.tune import study

    name = study.start(args.root, args.space, args.storage, args.study, args.workers, args.trials)
    print_best(args.root, name, args.storage, 5)
    print(f"next: mlpipe tune apply --study {name} && dvc exp run -S experiment=tuned")


def run_worker(args: argparse.Namespace) -> None:
    from mlpipe.tune import study

    ran = study.work(args.root, args.study, args.storage, args.index)
    print(f"{args.study}: this worker ran {ran} trial(s)")


def run_show(args: argparse.Namespace) -> None:
    print_best(args.root, args.study, args.storage, args.top)


def print_best(root: Path, name: str, storage: str | None, top: int) -> None:
    from mlpipe.tune import study

    found, best = study.best_trials(root, name, storage, top)
    counts: dict[str, int] = {}
    for t in found.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    goal = found.direction.name.lower()
    print(f"study {name}: {len(found.trials)} trial(s) ({states or 'none'}), {goal}")
    if not best:
        return
    keys = list(best[0].params)
    rows = [["trial", "objective", *keys, "seconds"]]
    for t in best:
        seconds = t.duration.total_seconds() if t.duration else 0.0
        rows.append(
            [
                str(t.number),
                f"{t.value:.4f}",
                *(_cell(t.params.get(k)) for k in keys),
                f"{seconds:.0f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_apply(args: argparse.Namespace) -> None:
    from mlpipe.tune import study
    from mlpipe.tune.apply import experiment_yaml, write_experiment

    found, best = study.best_trials(args.root, args.study, args.storage, 1)
    if not best:
        raise ConfigError(f"study {args.study!r} has no complete trial yet")
    trial = best[0]
    overrides = list(trial.user_attrs.get(study.OVERRIDES_ATTR, []))
    groups = {p.name for p in (args.root / "conf").iterdir() if p.is_dir()}
    header = [
        f"Best trial {trial.number} of study {args.study} ({found.direction.name.lower()} "
        f"{trial.value:.4f}), written by `mlpipe tune apply`.",
        f"  dvc exp run -S experiment={args.name}",
        "Overrides: " + " ".join(overrides),
    ]
    path = write_experiment(
        args.root / "conf", args.name, experiment_yaml(overrides, groups, header)
    )
    print(f"wrote {path}: trial {trial.number}, objective {trial.value:.4f}")
    print(f"next: dvc exp run -S experiment={args.name}")


VERBS = {"start": run_start, "worker": run_worker, "show": run_show, "apply": run_apply}
