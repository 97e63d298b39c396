"""The Model Registry: versions, their tags and descriptions, aliases.

Registry stages are deprecated in MLflow 3: aliases (`champion`, `challenger`) mark
versions instead. `search_model_versions` leaves aliases empty (mlflow#16734), so they
are read from the registered model.

`locked(name)` serialises everything that reads the aliases and then moves them (the
register stage, `mlpipe registry promote|rollback`) across processes and machines: a file
lock beside a SQLite store, a lease elsewhere (a tracking server, a database URI).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mlflow
from filelock import Timeout
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError
from mlpipe.tracking import store

log = logging.getLogger(__name__)
LOCK_WAIT_S = 600.0  # how long to wait for another writer's alias moves
LEASE_TTL_S = 120.0  # a lease older than this is a dead holder's: broken by the next writer
LEASE_SUFFIX = ".mlpipe-lock"


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
        raise TrackingError(f"no registered model {name!r} in {store.display_uri()}")
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


def versions_of_run(name: str, run_id: str) -> list[VersionView]:
    """Versions of `name` registered from run `run_id`, oldest first."""
    query = f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'"
    try:
        found = store.client().search_model_versions(query)
    except MlflowException as exc:
        raise TrackingError(f"searching versions of {name!r}: {exc.message}") from None
    return sorted((_view(mv, {}) for mv in found), key=lambda v: int(v.version))


def set_alias(name: str, alias: str, version: str) -> None:
    try:
        store.client().set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise TrackingError(f"setting @{alias} of {name!r}: {exc.message}") from None


def delete_alias(name: str, alias: str) -> None:
    try:
        store.client().delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        raise TrackingError(f"removing @{alias} of {name!r}: {exc.message}") from None


@contextlib.contextmanager
def locked(
    name: str, lease: bool | None = None, wait_s: float = LOCK_WAIT_S, purpose: str = "registry"
) -> Iterator[None]:
    """Hold the right to read and move the aliases of `name` (and register versions); with
    another `purpose`, the right to do that (the lease is then named after `name` alone).

    SQLite store: a file lock beside the database, freed by the kernel if the holder dies.
    Any other store: a lease, i.e. a registered model `<name>.mlpipe-lock` (creating a
    registered model is atomic in MLflow's SQL stores: one creator wins); a holder that
    died leaves it, and it is broken once older than LEASE_TTL_S. `lease=True` forces the
    lease on a SQLite store too (tests).
    """
    db = store.sqlite_path(store.tracking_uri())
    if db is not None and not lease:
        try:
            with store.lock_for(db, purpose).acquire(timeout=wait_s):
                yield
        except Timeout:
            raise TrackingError(
                f"{purpose} lock of {store.display_uri()} still held after {wait_s:.0f} s "
                f"({db}.{purpose}.lock): another process is stuck holding it"
            ) from None
        return
    lease_name = _acquire_lease(name, wait_s)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            store.client().delete_registered_model(lease_name)


def _acquire_lease(name: str, wait_s: float) -> str:
    lease_name, c = name + LEASE_SUFFIX, store.client()
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
    deadline, delay = time.monotonic() + wait_s, 0.05
    while True:
        try:
            c.create_registered_model(
                lease_name, tags={"mlpipe.lease": holder}, description=f"lock of {name}"
            )
            return lease_name
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise TrackingError(f"locking the registry of {name!r}: {exc.message}") from None
        _break_if_stale(lease_name)
        if time.monotonic() > deadline:
            raise TrackingError(
                f"registry of {name!r} still locked after {wait_s:.0f} s: registered model "
                f"{lease_name!r} is held by another writer (delete it if that writer is gone)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _break_if_stale(lease_name: str) -> None:
    """Delete a lease whose holder has kept it past LEASE_TTL_S (a dead holder's)."""
    c = store.client()
    try:
        held = c.get_registered_model(lease_name)
    except MlflowException:
        return  # released meanwhile
    age_s = time.time() - int(held.creation_timestamp or 0) / 1000
    if age_s > LEASE_TTL_S:
        log.warning("breaking the registry lease %s: held for %.0f s", lease_name, age_s)
        with contextlib.suppress(MlflowException):
            c.delete_registered_model(lease_name)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    c = store.client()
    try:
        for key, value in tags.items():
            c.set_model_version_tag(name, version, key, value)
    except MlflowException as exc:
        raise TrackingError(f"tagging {name!r} v{version}: {exc.message}") from None


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
