"""Studies in Optuna storage, and the workers that run their trials.

Storage: `--storage URL`, else $MLPIPE_TUNE_STORAGE (the team stack's PostgreSQL, e.g.
postgresql://.../optuna), else `sqlite:///<repo>/optuna.db`. It is an Optuna RDB storage
with heartbeats, so a trial whose worker was killed is marked FAIL about `grace_s` later
and the study goes on. `start` creates the study once (never concurrently: creating one
study from several workers races on an empty database), stores the search space and the
MLflow parent run in it, then runs local workers; `worker` joins from any machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import yaml

from mlpipe.dataset import ImageDataset, load_dataset
from mlpipe.errors import ConfigError, DataError
from mlpipe.tune.config import SearchSpace, check, load_space, parse_space
from mlpipe.tune.trial import composed_params, train_trial, trial_config

log = logging.getLogger(__name__)
# heartbeats and the matplotlib plots are "experimental" in Optuna: one warning each, per process
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
STORAGE_ENV = "MLPIPE_TUNE_STORAGE"
SPACE_ATTR, RUN_ATTR, EXPERIMENT_ATTR = "mlpipe.space", "mlpipe.mlflow_run_id", "mlpipe.experiment"
OVERRIDES_ATTR = "overrides"


def storage_url(root: Path, given: str | None) -> str:
    return given or os.environ.get(STORAGE_ENV) or f"sqlite:///{(root / 'optuna.db').resolve()}"


def open_storage(url: str, space: SearchSpace | None = None) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several local workers: wait for the file lock
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=space.heartbeat_s if space else 10,
            grace_period=space.grace_s if space else 30,
            heartbeat_stale_trial_callback=_close_killed_trial,
            **kwargs,
        )
    except Exception as exc:  # SQLAlchemy: bad URL, unreachable server, missing driver
        raise ConfigError(f"--storage {_redacted(url)}: {str(exc).splitlines()[0]}") from None


def _close_killed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna failed a trial whose worker stopped beating: close its MLflow run too."""
    from mlpipe.tracking import tuning

    run_id = trial.user_attrs.get("mlflow_run_id")
    log.warning("trial %d: its worker stopped (no heartbeat): marked FAIL", trial.number)
    if run_id:
        tuning.mark_killed(str(run_id))


def _redacted(url: str) -> str:
    from mlpipe.errors import redact

    return redact(url)


def processed_data(root: Path) -> Path:
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    folder: Path = root / str(params.get("paths", {}).get("processed", "data/processed"))
    if not (folder / "meta.json").is_file():
        raise DataError(
            f"{folder}: no processed data: run `dvc repro preprocess` first (trials train "
            "on the pipeline's own splits)"
        )
    return folder


def prepare(root: Path, space_name: str, trials: int | None) -> tuple[SearchSpace, str]:
    """The checked space (with --trials applied) and its YAML, before anything starts."""
    path_space = load_space(root, space_name)
    raw = yaml.safe_load(path_space.source.read_text())
    if trials is not None:
        if trials < 1:
            raise ConfigError(f"--trials: must be >= 1, got {trials}")
        raw["trials"] = trials
    space = parse_space(raw, path_space.source)
    check(space, lambda overrides: composed_params(root, overrides))
    processed_data(root)
    return space, yaml.safe_dump(raw, sort_keys=False)


def start(
    root: Path,
    space_name: str,
    storage: str | None,
    study_name: str | None,
    workers: int,
    trials: int | None,
) -> str:
    """Create the study, open its MLflow run, run `workers` local workers to the end."""
    from mlpipe.tracking import tuning

    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    space, space_yaml = prepare(root, space_name, trials)
    url = storage_url(root, storage)
    name = study_name or f"{space.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    rdb = open_storage(url, space)
    try:
        direction = optuna.study.StudyDirection[space.direction.upper()]
        study = optuna.create_study(storage=rdb, study_name=name, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(
            f"study {name!r} exists in {_redacted(url)}: join it with `mlpipe tune worker "
            f"--study {name}`, or choose another --study"
        ) from None
    experiment = composed_params(root, list(space.fixed))["tracking"]["experiment"]
    parent = tuning.study_run(experiment, name, yaml.safe_load(space_yaml))
    study.set_user_attr(SPACE_ATTR, space_yaml)
    study.set_user_attr(RUN_ATTR, parent)
    study.set_user_attr(EXPERIMENT_ATTR, experiment)
    log.info("study %s in %s; MLflow run %s; %d worker(s)", name, _redacted(url), parent, workers)
    if workers == 1:
        work(root, name, url, index=0)
    else:
        _run_workers(root, name, url, workers)
    summarise(study, parent)
    return name


def _run_workers(root: Path, name: str, url: str, workers: int) -> None:
    cmd = [sys.executable, "-m", "mlpipe.cli", "tune", "worker", "--study", name]
    procs = [
        subprocess.Popen([*cmd, "--storage", url, "--index", str(i)], cwd=root)
        for i in range(workers)
    ]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    if any(codes):
        log.warning("worker exit codes %s: the study keeps what they finished", codes)


def work(root: Path, name: str, storage: str | None, index: int | None = None) -> int:
    """Run trials of study `name` until it has its trials (or this worker's time budget
    is spent). Returns how many trials this worker ran."""
    url = storage_url(root, storage)
    probe = open_storage(url)
    try:
        summary = optuna.load_study(study_name=name, storage=probe)
    except KeyError:
        raise ConfigError(f"no study {name!r} in {_redacted(url)}") from None
    attrs = summary.user_attrs
    if SPACE_ATTR not in attrs:
        raise ConfigError(f"study {name!r} was not made by `mlpipe tune start`")
    space = parse_space(yaml.safe_load(attrs[SPACE_ATTR]), Path(f"study {name}"))
    seed = space.seed + (index if index is not None else os.getpid())
    study = optuna.load_study(
        study_name=name, storage=open_storage(url, space), sampler=_sampler(space, seed),
        pruner=_pruner(space),
    )  # fmt: skip
    data = load_dataset(processed_data(root))
    objective = Objective(root, space, data, attrs[RUN_ATTR], name)
    done = optuna.study.MaxTrialsCallback(
        space.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    from mlpipe.train.engine import TrainingDiverged

    study.optimize(
        objective, timeout=space.timeout_s, callbacks=[done], catch=(TrainingDiverged,),
        gc_after_trial=True,
    )  # fmt: skip
    return objective.count


def _sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(space.startup_trials, 1))


def _pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_epochs
        )
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


class Objective:
    """One trial: suggest, compose, train with per-epoch reports, record in MLflow."""

    def __init__(
        self, root: Path, space: SearchSpace, data: ImageDataset, parent: str, study: str
    ) -> None:
        self.root, self.space, self.data, self.parent, self.study = root, space, data, parent, study
        self.count = 0

    def __call__(self, trial: optuna.Trial) -> float:
        from mlpipe.tracking.tuning import TrialRun

        self.count += 1
        params = {d.key: _suggest(trial, d) for d in self.space.dimensions}
        overrides = self.space.overrides(params)
        trial.set_user_attr(OVERRIDES_ATTR, overrides)
        cfg = trial_config(self.root, overrides)
        record = TrialRun(
            self.parent,
            self.study,
            trial.number,
            {"overrides": " ".join(overrides)} | {k: str(v) for k, v in params.items()},
        )
        trial.set_user_attr("mlflow_run_id", record.run_id)
        last: list[float] = []

        def report(stats: Any) -> None:
            value = float(getattr(stats, self.space.objective))
            last.append(value)
            record.log_epoch(
                {"val/accuracy": stats.val_accuracy, "val/loss": stats.val_loss,
                 "train/epoch_loss": stats.train_loss}, stats.epoch,
            )  # fmt: skip
            trial.report(value, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {stats.epoch}: {value:.4f}")

        try:
            train_trial(cfg, self.data, report)
        except optuna.TrialPruned:
            record.finish("PRUNED", last[-1] if last else None)
            raise
        except BaseException:
            record.finish("FAIL", None)
            raise
        record.finish("COMPLETE", last[-1])
        return last[-1]


def _suggest(trial: optuna.Trial, dim: Any) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(dim.key, list(dim.choices))
    if dim.type == "int":
        return trial.suggest_int(
            dim.key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log
        )
    return trial.suggest_float(dim.key, dim.low, dim.high, step=dim.step, log=dim.log)


def summarise(study: optuna.Study, parent: str) -> None:
    """Optuna's plots and the best value onto the study's MLflow run."""
    from mlpipe.tracking import tuning

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = {"objective": float(study.best_value)} if finished else {}
    best["complete"] = float(len(finished))
    best["pruned"] = float(sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials))
    with tempfile.TemporaryDirectory() as tmp:
        images = plots(study, Path(tmp)) if len(finished) >= 2 else []
        tuning.finish_study_run(parent, best, images)


def plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optimisation history, parameter importances, parallel coordinates (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    made = []
    for name, draw in (
        ("optimization_history", vis.plot_optimization_history),
        ("param_importances", vis.plot_param_importances),
        ("parallel_coordinate", vis.plot_parallel_coordinate),
    ):
        with contextlib.suppress(ValueError, RuntimeError, ZeroDivisionError):  # e.g. one param
            axes = draw(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure(root=True)
            assert isinstance(figure, matplotlib.figure.Figure)
            figure.set_size_inches(9, 5)
            figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            made.append(out / f"{name}.png")
    return made


def best_trials(
    root: Path, name: str, storage: str | None, top: int
) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
    url = storage_url(root, storage)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise ConfigError(f"no study {name!r} in {_redacted(url)}") from None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return study, sorted(done, key=lambda t: t.value or 0.0, reverse=reverse)[:top]
