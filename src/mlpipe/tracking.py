"""The only module that imports mlflow.

Default store: SQLite `mlflow.db` with artifacts in `mlartifacts/`, both at the
repository root. The root is found also when DVC runs an experiment in a temporary
copy (`.dvc/tmp/exps/...`), so no run is lost with the copy. `MLFLOW_TRACKING_URI`
overrides the store.
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlpipe import registry
from mlpipe.errors import TrackingError

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def project_root(start: Path | None = None) -> Path:
    """The repository root, never a DVC experiment's temporary copy of it."""
    path = Path(os.environ.get("DVC_ROOT") or start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


# mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; remember what we exported so it
# is not mistaken for the user's own override (matters when one process runs many stages),
# and whether the user had set that very value before we exported it.
_exported_uri: str | None = None
_user_override: str | None = None


def _user_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None or uri != _exported_uri:
        return uri
    return _user_override


def tracking_uri(root: Path | None = None) -> str:
    return _user_uri() or f"sqlite:///{project_root(root) / DB_NAME}"


def _uses_default_store() -> bool:
    return _user_uri() is None


def _connect() -> None:
    global _exported_uri, _user_override
    _user_override = _user_uri()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    _exported_uri = uri


def setup(experiment: str) -> str:
    """Point mlflow at the store and select (or create) `experiment`; return its id."""
    _connect()
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            exp_id = found.experiment_id
        else:
            location = None
            if _uses_default_store():
                location = (project_root() / ARTIFACTS_DIR).as_uri()
            exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {tracking_uri()}: {exc.message}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def run_tags(stage: str) -> dict[str, str]:
    """Lineage tags: git commit and, during `dvc exp run`, the experiment name."""
    tags = {"mlpipe.stage": stage}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for env, tag in [
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev"),
    ]:
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """Open the pipeline execution's run; yields its id."""
    setup(experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        yield run.info.run_id


@contextlib.contextmanager
def resume_run(run_id: str) -> Iterator[str]:
    """Reopen a run started by an earlier stage of the same pipeline execution."""
    _connect()
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run.info.run_id
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} in {tracking_uri()}: {exc.message}") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(getattr(value, "value", value))
    return flat


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(flatten(params))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """One batched call: per-metric calls cost milliseconds each on SQLite."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dict(obj: dict[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_artifacts(folder: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


# -- the served model ---------------------------------------------------------------------

SERVING_CODE = Path(__file__).with_name("serving.py")


def log_classifier(
    model: Any,
    class_names: list[str],
    input_example: np.ndarray,
    metadata: dict[str, Any] | None = None,
    name: str = "model",
) -> str:
    """Log `model` (raw pixels -> logits) as a pyfunc that serves without this repository.

    The pyfunc (serving.py, logged as code) runs a TorchScript copy of model + softmax:
    raw images (N, C, H, W) uint8 in; `label`, `probability`, `probabilities` out.
    `input_example`: a few raw training images, (N >= 2, C, H, W). Returns the model URI.
    """
    import torch

    from mlpipe.export import TORCHSCRIPT_FILE, export_torchscript
    from mlpipe.serving import TORCHSCRIPT_ARTIFACT

    example = np.ascontiguousarray(input_example).astype(np.uint8)
    image_shape = [int(d) for d in example.shape[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        cpu_copy = copy.deepcopy(model).cpu().eval()  # the caller's model stays where it is
        script = export_torchscript(cpu_copy, example, Path(tmp) / TORCHSCRIPT_FILE)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(SERVING_CODE),
            artifacts={TORCHSCRIPT_ARTIFACT: str(script)},
            model_config={"class_names": list(class_names), "image_shape": image_shape},
            signature=_classifier_signature(image_shape),
            input_example=example[:2],
            pip_requirements=_serving_requirements(torch.__version__),
            metadata={
                "class_names": list(class_names),
                "input": f"raw pixels 0..255, uint8, shape (N, {', '.join(map(str, image_shape))})",
                "output": "label, probability, probabilities (in class_names order)",
                **(metadata or {}),
            },
        )
    return str(info.model_uri)


def _classifier_signature(image_shape: list[int]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))]),
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("double", "probability"),
                ColSpec(Array("double"), "probabilities"),
            ]
        ),
    )


def _serving_requirements(torch_version: str) -> list[str]:
    """Pinned, so the model's environment is explicit (and inference of it is skipped)."""
    import pandas

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch_version.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pandas=={pandas.__version__}",
    ]


def predict_labels(model_uri: str, images: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Class names a logged model predicts for raw images, (N,) str.

    Reads both our pyfunc (a `label` column) and older models that return logits
    (argmax over `class_names`), casting the images to the dtype the signature wants.
    """
    _connect()
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise TrackingError(f"loading {model_uri}: {exc.message}") from None
    schema = model.metadata.get_input_schema()
    tensor = schema is not None and schema.is_tensor_spec()
    dtype = schema.numpy_types()[0] if tensor else None
    parts = []
    for start in range(0, len(images), 1000):
        batch = images[start : start + 1000]
        out = model.predict(batch.astype(dtype) if dtype is not None else batch)
        if hasattr(out, "columns") and "label" in out.columns:
            parts.append(out["label"].astype(str).to_numpy())
        else:
            index = np.asarray(out).argmax(axis=1)
            parts.append(np.asarray(class_names, dtype=object)[index].astype(str))
    return np.concatenate(parts)


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri())


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register `model_uri` under `name`; return the new version number."""
    _connect()
    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise TrackingError(f"registering {model_uri} as {name!r}: {exc.message}") from None
    return str(version.version)


def version_for_alias(name: str, alias: str) -> Any | None:
    """The ModelVersion behind `name@alias`, or None when the alias is unset."""
    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def run_metric(run_id: str, key: str) -> float | None:
    try:
        return client().get_run(run_id).data.metrics.get(key)
    except MlflowException:
        return None


@dataclass
class RunView:
    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


def get_run(run_id: str) -> RunView:
    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} in {tracking_uri()}: {exc.message}") from None
    return RunView(run_id, dict(run.data.params), dict(run.data.tags), dict(run.data.metrics))


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)


def set_version_description(name: str, version: str, text: str) -> None:
    client().update_model_version(name, version, description=text)


# -- registry views (for people: `mlpipe registry`) ----------------------------------------


@dataclass
class VersionView:
    name: str
    version: str
    run_id: str | None
    source: str
    created_ms: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def model_aliases(name: str) -> dict[str, str]:
    """alias -> version of a registered model (`search_model_versions` leaves aliases
    empty, mlflow#16734; the registered model has them)."""
    return {alias: str(v) for alias, v in _registered_model(name).aliases.items()}


def model_tags(name: str) -> dict[str, str]:
    return dict(_registered_model(name).tags)


def list_versions(name: str) -> list[VersionView]:
    aliases = model_aliases(name)
    try:
        found = client().search_model_versions(f"name = '{_quote(name)}'")
    except MlflowException as exc:
        raise TrackingError(f"listing versions of {name!r}: {exc.message}") from None
    views = [_view(mv, aliases) for mv in found]
    return sorted(views, key=lambda v: int(v.version))


def get_version(name: str, version: str) -> VersionView:
    """One version; unknown model or version: TrackingError naming it."""
    aliases = model_aliases(name)  # also checks the model exists
    if not str(version).isdigit():
        raise TrackingError(f"model {name!r} has no version {version!r} (versions are numbers)")
    try:
        mv = client().get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"model {name!r} has no version {version}") from None
    return _view(mv, aliases)


def _registered_model(name: str) -> Any:
    try:
        return client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"no registered model {name!r} in {tracking_uri()}") from None
        raise TrackingError(f"registered model {name!r}: {exc.message}") from None


def _view(mv: Any, aliases: dict[str, str]) -> VersionView:
    version = str(mv.version)
    return VersionView(
        name=mv.name,
        version=version,
        run_id=mv.run_id,
        source=str(mv.source),
        created_ms=int(mv.creation_timestamp or 0),
        tags=dict(mv.tags or {}),
        aliases=sorted(a for a, v in aliases.items() if v == version),
        description=mv.description or "",
    )


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


# -- the register stage's registry IO ----------------------------------------------------


def evaluate_alias(
    name: str, alias: str, images: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> tuple[registry.Evaluation | None, str | None, str | None]:
    """(evaluation, version, error) of whatever `name@alias` is, on these test images."""
    holder = version_for_alias(name, alias)
    if holder is None:
        return None, None, None
    version = str(holder.version)
    try:
        predicted = predict_labels(f"models:/{name}/{version}", images, class_names)
        return registry.evaluate_labels(labels, predicted, class_names), version, None
    except (TrackingError, ValueError) as exc:
        log.warning("%s v%s could not be evaluated: %s", name, version, exc)
        return None, version, str(exc)


def publish_version(
    cfg: Any,
    model_uri: str,
    run_id: str,
    decision: registry.Decision,
    tags: dict[str, str],
    export_dir: Path,
    card: Any,
) -> tuple[str, list[str]]:
    """Register `model_uri` with `tags`, describe it with `card(version)`, log the exports
    and the card on its run, then move the aliases the decision allows.

    `cfg` is a RegisterConfig. Returns the new version and the aliases it got.
    """
    version = register(model_uri, cfg.model_name, tags)
    text = card(version)
    set_version_description(cfg.model_name, version, text)
    with resume_run(run_id):
        log_artifacts(export_dir, "export")
        log_text(text, "model_card.md")
        set_tags(
            {
                "registered_model": cfg.model_name,
                "registered_version": version,
                "registration_decision": decision.outcome.value,
                "registration_reason": decision.reason,
            }
        )
    aliases = []
    if decision.outcome is not registry.Outcome.rejected:
        set_alias(cfg.model_name, cfg.challenger_alias, version)
        aliases.append(cfg.challenger_alias)
    if decision.promote:
        move = plan_alias_move(
            cfg.model_name, cfg.champion_alias, version, "promote", decision.reason
        )
        apply_alias_move(cfg.model_name, move, by="register stage")
        aliases.append(cfg.champion_alias)
    return version, aliases


# -- alias moves with history ----------------------------------------------------------------


@dataclass
class AliasMove:
    alias: str
    version: str
    previous: str | None
    action: str  # promote | rollback
    forced: bool
    reason: str


def plan_alias_move(
    name: str, alias: str, version: str | None, action: str, reason: str, forced: bool = False
) -> AliasMove:
    """Check a move and work out its target without changing anything.

    `version` is the target of a promote; a rollback finds it in the alias's history.
    """
    current = model_aliases(name).get(alias)
    if action == "rollback":
        stack = registry.parse_json_list(model_tags(name).get(registry.stack_tag(alias)))
        version, _ = registry.rollback_target(stack, current, alias)
    if version is None:
        raise TrackingError(f"{action}: no version given")
    get_version(name, version)  # the target must exist
    return AliasMove(alias, str(version), current, action, forced, reason)


def apply_alias_move(name: str, move: AliasMove, by: str | None = None) -> None:
    """Move the alias and record it: history tags on the model, a tag on the version."""
    tags = model_tags(name)
    stack = registry.parse_json_list(tags.get(registry.stack_tag(move.alias)))
    if move.action == "rollback":
        _, stack = registry.rollback_target(stack, move.previous, move.alias)
    else:
        stack = registry.after_promotion(stack, move.previous, move.version)
    event = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": move.action,
        "version": move.version,
        "previous": move.previous,
        "by": by or _user(),
        "forced": move.forced,
        "reason": move.reason,
    }
    history = registry.append_event(
        registry.parse_json_list(tags.get(registry.history_tag(move.alias))), event
    )
    c = client()
    try:
        c.set_model_version_tag(
            name, move.version, f"{move.alias}.last_move", json.dumps(event, sort_keys=True)
        )
        if move.forced:
            c.set_model_version_tag(name, move.version, f"{move.alias}.forced", "true")
        c.set_registered_model_tag(name, registry.stack_tag(move.alias), json.dumps(stack))
        c.set_registered_model_tag(name, registry.history_tag(move.alias), json.dumps(history))
        c.set_registered_model_alias(name, move.alias, move.version)
    except MlflowException as exc:
        raise TrackingError(f"moving @{move.alias} of {name!r}: {exc.message}") from None


def alias_history(name: str, alias: str) -> list[Any]:
    return registry.parse_json_list(model_tags(name).get(registry.history_tag(alias)))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
