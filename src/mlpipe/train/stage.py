"""One execution of the train stage: the model, the resume file and, on rank 0, the MLflow
run around `fit`.

The run id has one home at a time: the resume file while training is unfinished (so a
killed run continues in the same MLflow run), then train.json, which evaluate and
register read. Under torchrun every rank trains; rank 0 alone imports MLflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlpipe.dataset import ImageDataset, ImageSplit, ShardedDataset
from mlpipe.errors import TrackingError, first_line
from mlpipe.models import Classifier, build_model, inference_batch, predict_logits
from mlpipe.shards import open_shard
from mlpipe.train import distributed, memory
from mlpipe.train.device import Runtime, seed_everything
from mlpipe.train.distributed import DistContext
from mlpipe.train.engine import DataSource, EpochStats, History, StepStats, TensorData, fit
from mlpipe.train.resume import ResumeFile
from mlpipe.train.stream import StreamSplit

log = logging.getLogger(__name__)
RUN_ID_KEY = "mlflow_run_id"  # in the resume file's `extra`, while the run is unfinished
UNLOGGED_KEY = "unlogged_from_epoch"  # in `extra`: the tracking store was lost at this epoch
LOGGED_SECTIONS = ("model", "train", "runtime")  # params.yaml sections logged as run params


@dataclass
class Trained:
    model: Classifier
    history: History
    run_id: str | None = None  # rank 0 only
    model_uri: str | None = None  # the logged (served) model, rank 0 only
    temperature: float = 1.0  # fitted on the val split, rank 0 only
    tracking_lost: str | None = None  # why the run could not be logged (the model is kept)


def train(
    cfg: dict[str, Any],
    data: ShardedDataset,
    runtime: Runtime,
    resume_path: Path,
    validation: Path | None = None,
    data_docs: Path | None = None,
    data_dir: Path | None = None,
) -> tuple[Trained, ResumeFile]:
    """Build and fit `cfg["model"]` on data's train split, validating on its val split:
    in memory or streamed from the shards, as train.in_memory decides."""
    model, train_data, val = model_and_sources(cfg, data, runtime)
    resume = ResumeFile.for_run(
        resume_path,
        cfg["model"],
        cfg["train"],
        {"train": train_data, "val": val},
        runtime.dist,
        cfg["runtime"],
    )
    state = resume.load() or {}  # a bad checkpoint fails here, before MLflow is touched
    if not runtime.dist.is_main:
        logging.getLogger("mlpipe").setLevel(logging.WARNING)  # rank 0 reports progress
        history = fit(model, train_data, val, cfg["train"], runtime, checkpointer=resume)
        return Trained(model, history), resume
    from mlpipe.tracking import health, store

    health.check_reachable(store.tracking_uri())  # now, not after hours of training
    from mlpipe.tracking import logged_model, runs  # only rank 0 ever imports mlflow

    rows = state.get("history", [])  # epochs trained before a kill
    tracker = _Tracker(resume, len(rows))
    fitted: History | None = None
    temperature, uri = 1.0, None
    try:
        with open_run(cfg, resume.extra.get(RUN_ID_KEY)) as (run_id, reopened):
            resume.extra[RUN_ID_KEY] = run_id
            if not reopened:
                log_inputs(cfg, data, validation, data_docs, data_dir)
            unlogged = 1 if not reopened else resume.extra.get(UNLOGGED_KEY, len(rows) + 1)
            for row in rows[unlogged - 1 :]:  # not logged before a kill or a lost server
                log_epoch(row)
            resume.extra.pop(UNLOGGED_KEY, None)
            fitted = fit(
                model, train_data, val, cfg["train"], runtime, tracker.epoch,
                checkpointer=resume, on_steps=tracker.steps,
            )  # fmt: skip
            temperature = calibrate(model, val, runtime, log_to_run=tracker.lost is None)
            if tracker.lost is None:
                uri = logged_model.log_classifier(
                    model, data.class_names, first_images(train_data, 4),
                    temperature=temperature,
                )  # fmt: skip
    except runs.LOGGING_FAILURES as exc:
        if fitted is None:  # before training: nothing to keep
            raise
        tracker.lose(exc)  # after training (logging the model, closing the run)
    assert fitted is not None  # fit returned, or the exception above was re-raised
    if tracker.lost is not None:
        return Trained(model, fitted, run_id, None, temperature, tracker.lost), resume
    resume.extra.pop(RUN_ID_KEY)  # from here on train.json holds it
    return Trained(model, fitted, run_id, uri, temperature), resume


class _Tracker:
    """Per-epoch logging that outlives the tracking server: the first failure is reported
    once, training goes on unlogged (the resume file remembers from which epoch) and the
    stage then fails keeping the model, so a rerun logs it without retraining."""

    def __init__(self, resume: ResumeFile, logged_epochs: int) -> None:
        self.resume, self.logged = resume, logged_epochs
        self.lost: str | None = None

    def epoch(self, stats: EpochStats) -> None:
        self._call(log_epoch, stats)
        if self.lost is None:
            self.logged = stats.epoch

    def steps(self, steps: list[StepStats]) -> None:
        self._call(log_steps, steps)

    def _call(self, fn: Any, arg: Any) -> None:
        from mlpipe.tracking import runs

        if self.lost is None:
            try:
                fn(arg)
            except runs.LOGGING_FAILURES as exc:
                self.lose(exc)

    def lose(self, exc: BaseException) -> None:
        from mlpipe.tracking import runs, store

        if self.lost is not None:
            return
        runs.stop_retrying()  # closing the run must not wait minutes more
        self.resume.extra[UNLOGGED_KEY] = self.logged + 1  # saved with the next checkpoint
        self.lost = f"tracking store {store.display_uri()} failed ({first_line(exc)})"
        log.warning("%s: training goes on; the run is not logged from epoch %d",
                    self.lost, self.logged + 1)  # fmt: skip


FIT_SPLITS = ("train", "val")


def model_and_splits(
    cfg: dict[str, Any], data: ImageDataset | ShardedDataset
) -> tuple[Classifier, TensorData, TensorData]:
    """The seeded, freshly built model and the train and val splits `fit` takes, in
    memory: what the train stage fits, and what each `mlpipe tune` trial fits."""
    model = seeded_model(cfg, data)
    splits = {s: data.splits[s] for s in FIT_SPLITS}
    loaded = {
        s: split if isinstance(split, ImageSplit) else ImageSplit(split.load(), split.labels)
        for s, split in splits.items()
    }
    train_data, val = (
        TensorData.from_numpy(loaded[s].images, loaded[s].labels, cfg["train"].shuffle_buffer)
        for s in FIT_SPLITS
    )
    return model, train_data, val


def model_and_sources(
    cfg: dict[str, Any], data: ShardedDataset, runtime: Runtime
) -> tuple[Classifier, DataSource, DataSource]:
    """`model_and_splits` when train + val fit in memory (train.in_memory), else the same
    model and both splits streamed from their (verified) shards."""
    t = cfg["train"]
    needed = sum(data.splits[s].nbytes for s in FIT_SPLITS)
    in_memory = memory.decide(t.in_memory, needed, runtime.device, t.memory_share)
    # rank 0's choice everywhere: free RAM differs between ranks, the steps per epoch must not
    if distributed.gather_objects(in_memory, runtime.dist)[0]:
        return model_and_splits(cfg, data)
    model = seeded_model(cfg, data)
    verify_shards(data)
    train_data, val = (
        StreamSplit(data.splits[s], t.shuffle_buffer, t.loader_workers) for s in FIT_SPLITS
    )
    return model, train_data, val


def seeded_model(cfg: dict[str, Any], data: ImageDataset | ShardedDataset) -> Classifier:
    seed_everything(cfg["train"].seed)
    norm = data.extra["normalization"]
    return build_model(
        cfg["model"], data.image_shape[0], len(data.class_names), norm["mean"], norm["std"]
    )


def verify_shards(data: ShardedDataset) -> None:
    """Every shard train and val read, hashed once before training (not per epoch): a
    changed or truncated one stops the stage now, with a line naming it."""
    seen = set()
    for name in FIT_SPLITS:
        split = data.splits[name]
        for number in np.unique(split.shard):
            shard = split.shards[int(number)]
            if shard.path not in seen:
                seen.add(shard.path)
                open_shard(shard, split.image_shape, verify=True)


def first_images(data: DataSource, n: int) -> np.ndarray:
    """(n, C, H, W) uint8 from the start of the split, on the CPU (an input example)."""
    if isinstance(data, StreamSplit):
        return data.head(n)
    assert isinstance(data, TensorData)
    return data.images[:n].cpu().numpy()


def val_logits(
    model: Classifier, val: DataSource, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of the whole val split, in order (one process), in batches sized
    by the image (`inference_batch`: 1,000 Fashion-MNIST images, 75 at 96x96x3)."""
    batch = inference_batch(val.image_shape)
    if isinstance(val, TensorData):
        logits = predict_logits(model, val.images, batch, runtime.device, runtime.autocast)
        return logits.numpy(), val.labels.cpu().numpy()
    model.eval()
    out, labels = [], []
    with torch.no_grad():
        for x, y in val.ordered(batch, DistContext()):
            with runtime.autocast():
                out.append(model(x).float().cpu())
            labels.append(y.cpu())
    return torch.cat(out).numpy(), torch.cat(labels).numpy()


def calibrate(
    model: Classifier, val: DataSource, runtime: Runtime, log_to_run: bool = True
) -> float:
    """Temperature scaling: the T minimising the val split's NLL (never the test split's),
    logged with the val NLL and ECE before and after. 1.0 when there is no val data."""
    from mlpipe.evaluate import calibration as cal
    from mlpipe.tracking import runs

    if len(val) == 0:
        return 1.0
    logits, labels = val_logits(model, val, runtime)
    temperature = cal.fit_temperature(logits, labels)
    raw, scaled = cal.softmax(logits), cal.softmax(logits, temperature)
    log.info("temperature %.3f fitted on %d val images", temperature, len(val))
    if not log_to_run:
        return temperature
    runs.log_metrics(
        {
            "calibration/temperature": temperature,
            "calibration/val_nll_uncalibrated": cal.nll(raw, labels),
            "calibration/val_nll_calibrated": cal.nll(scaled, labels),
            "calibration/val_ece_uncalibrated": cal.ece(raw, labels),
            "calibration/val_ece_calibrated": cal.ece(scaled, labels),
        }
    )
    return temperature


@dataclass
class _Shape:
    """A split as MLflow's dataset input sees it: shapes and labels, no pixels read."""

    images: np.ndarray  # a zero-stride stand-in with the split's shape
    labels: np.ndarray


def split_shapes(data: ShardedDataset) -> dict[str, _Shape]:
    one = np.zeros((1, 1, 1, 1), dtype=np.uint8)
    return {
        name: _Shape(np.broadcast_to(one, (len(s), *s.image_shape)), s.labels)
        for name, s in data.splits.items()
    }


def log_inputs(
    cfg: dict[str, Any],
    data: ShardedDataset,
    validation: Path | None,
    docs: Path | None,
    data_dir: Path | None = None,
) -> None:
    """Params, the splits as MLflow dataset inputs (digests: DVC's md5s) and the data
    gate's results: they belong to the run that used the data."""
    from mlpipe.tracking import inputs, runs

    if data_dir is not None:
        name = Path(data.source).name or "data"
        dir_md5 = inputs.log_split_inputs(data_dir, split_shapes(data), name)
        runs.set_tags({"data_dvc_md5": dir_md5})

    runs.log_params(
        {k: dataclasses.asdict(cfg[k]) for k in LOGGED_SECTIONS}
        | {"data": {"source": data.source, **data.meta()["splits"]}}
    )
    if validation is not None and validation.is_file():
        summary = json.loads(validation.read_text())
        counts = ("evaluated", "passed", "failed", "warnings")
        runs.log_metrics({f"validate/{k}": summary[k] for k in counts if k in summary})
        runs.set_tags({"validation_success": str(summary.get("success"))})
        runs.log_artifact(validation, "validate")
    if docs is not None and docs.is_file():  # validate.html: one self-contained page
        runs.log_artifact(docs, "validate")
    elif docs is not None and docs.is_dir():  # a GX Data Docs site
        runs.log_artifacts(docs, "validate/data_docs")


# EpochStats field -> MLflow metric: grouped by `/` into sections of the run page, all on
# the optimizer-step axis of the per-step curves (`epoch` is a metric too, to plot against)
EPOCH_METRICS = {
    "epoch": "epoch",
    "train_loss": "train/epoch_loss",
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "seconds": "perf/epoch_seconds",
    "images_per_second": "perf/images_per_second",
}


def log_epoch(stats: EpochStats | dict[str, Any]) -> None:
    from mlpipe.tracking import runs

    row = stats if isinstance(stats, dict) else dataclasses.asdict(stats)
    step = int(row.get("step") or row["epoch"])  # resume files before `step` existed
    runs.log_metrics({name: row[k] for k, name in EPOCH_METRICS.items() if k in row}, step=step)


def log_steps(steps: list[StepStats]) -> None:
    """A sample of steps: the training loss and the learning rate (one-cycle warm-up)."""
    from mlpipe.tracking import runs

    series = [("train/loss", s.loss, s.step) for s in steps]
    runs.log_series(series + [("train/lr", s.lr, s.step) for s in steps])


def run_name(arch: str, tags: dict[str, str], now: datetime | None = None) -> str:
    """`cnn-<dvc experiment>`, else `cnn-<commit>-<UTC time>`: every plain `dvc repro` of
    one commit was `cnn-<commit>` before, so its runs could not be told apart."""
    if tags.get("dvc_exp_name"):
        return f"{arch}-{tags['dvc_exp_name']}"
    when = (now or datetime.now(UTC)).strftime("%m%d-%H%M%S")
    return f"{arch}-{tags.get('git_commit', 'local')[:8]}-{when}"


@contextlib.contextmanager
def open_run(cfg: dict[str, Any], previous: str | None) -> Iterator[tuple[str, bool]]:
    """Reopen the killed run's MLflow run when resuming; else (or if it is gone) a new one."""
    from mlpipe.tracking import runs

    with contextlib.ExitStack() as stack:
        run_id = None
        if previous:
            try:
                run_id = stack.enter_context(runs.resume_run(previous))
            except TrackingError as exc:
                log.warning("%s; logging to a new MLflow run", exc)
        if run_id is None:
            tags = runs.run_tags("train")
            name = run_name(cfg["model"].arch, tags)
            run_id = stack.enter_context(
                runs.start_run(cfg["tracking"].experiment, name, tags, system_metrics=True)
            )
            yield run_id, False
        else:
            yield run_id, True
