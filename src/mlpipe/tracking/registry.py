"""The Model Registry: versions, their tags and descriptions, aliases.

Registry stages are deprecated in MLflow 3: aliases (`champion`, `challenger`) mark
versions instead. `search_model_versions` leaves aliases empty (mlflow#16734), so they
are read from the registered model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError
from mlpipe.tracking import store


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


@dataclass
class ModelView:
    """A registered model: which version holds each alias, and the model's tags."""

    name: str
    aliases: dict[str, str]  # alias -> version
    tags: dict[str, str]


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register `model_uri` under `name`; return the new version number."""
    store.connect()
    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise TrackingError(f"registering {model_uri} as {name!r}: {exc.message}") from None
    return str(version.version)


def get_model(name: str) -> ModelView:
    """One read of the registered model; unknown name: TrackingError naming it."""
    found = find_model(name)
    if found is None:
        raise TrackingError(f"no registered model {name!r} in {store.tracking_uri()}")
    return found


def find_model(name: str) -> ModelView | None:
    """The registered model, or None when there is none of that name yet (any other
    problem with the store is a TrackingError: it must not pass for "no champion")."""
    try:
        found = store.client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise TrackingError(f"registered model {name!r}: {exc.message}") from None
    aliases = {alias: str(v) for alias, v in found.aliases.items()}
    return ModelView(name, aliases, dict(found.tags))


def model_aliases(name: str) -> dict[str, str]:
    """alias -> version of a registered model."""
    return get_model(name).aliases


def model_tags(name: str) -> dict[str, str]:
    return get_model(name).tags


def list_versions(name: str) -> list[VersionView]:
    aliases = model_aliases(name)
    try:
        found = store.client().search_model_versions(f"name = '{_quote(name)}'")
    except MlflowException as exc:
        raise TrackingError(f"listing versions of {name!r}: {exc.message}") from None
    views = [_view(mv, aliases) for mv in found]
    return sorted(views, key=lambda v: int(v.version))


def get_version(name: str, version: str, model: ModelView | None = None) -> VersionView:
    """One version; unknown model or version: TrackingError naming it.

    `model`: the registered model, when the caller has already read it.
    """
    aliases = (model or get_model(name)).aliases  # also checks the model exists
    if not str(version).isdigit():
        raise TrackingError(f"model {name!r} has no version {version!r} (versions are numbers)")
    try:
        mv = store.client().get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"model {name!r} has no version {version}") from None
    return _view(mv, aliases)


def set_alias(name: str, alias: str, version: str) -> None:
    store.client().set_registered_model_alias(name, alias, version)


def set_version_description(name: str, version: str, text: str) -> None:
    store.client().update_model_version(name, version, description=text)


def move_alias(
    name: str,
    alias: str,
    version: str,
    version_tags: dict[str, str],
    model_tags: dict[str, str],
) -> None:
    """Tag the version and the registered model, then point `alias` at `version`."""
    c = store.client()
    try:
        for key, value in version_tags.items():
            c.set_model_version_tag(name, version, key, value)
        for key, value in model_tags.items():
            c.set_registered_model_tag(name, key, value)
        c.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise TrackingError(f"moving @{alias} of {name!r}: {exc.message}") from None


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
