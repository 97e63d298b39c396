"""Where a registered version came from, and every number behind its decision, as tags."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from mlpipe.register.config import GATE_METRICS
from mlpipe.register.gates import Decision

log = logging.getLogger(__name__)
VERSION_LINEAGE = ("git_commit", "data_md5")  # the lineage a version carries as tags


def data_md5(lock: Path, stage: str, data: Path) -> str | None:
    """The md5 DVC recorded in `lock` for `data` as a dep of `stage` (None outside DVC)."""
    try:
        found = dvc_dep_hash(yaml.safe_load(lock.read_text()) or {}, stage, str(data))
    except (OSError, yaml.YAMLError):
        found = None
    if found is None:
        log.warning("%s: no md5 for %s in stage %s; lineage says unknown", lock, data, stage)
    return found


def dvc_dep_hash(lock: dict[str, Any], stage: str, path: str) -> str | None:
    """The md5 DVC recorded for `path` among `stage`'s deps in dvc.lock, if any."""
    stages = lock.get("stages") if isinstance(lock, dict) else None
    deps = (stages or {}).get(stage, {}).get("deps", []) if isinstance(stages, dict) else []
    wanted = path.rstrip("/")
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, dict) and str(dep.get("path", "")).rstrip("/") == wanted:
            value = dep.get("md5") or dep.get("hash")
            return str(value) if value else None
    return None


def lineage(
    run_id: str, run_params: dict[str, str], run_tags: dict[str, str], data_md5: str | None
) -> dict[str, str]:
    """Where a version came from: code, data, params and the MLflow run."""
    params_json = json.dumps(run_params, sort_keys=True)
    return {
        "git_commit": run_tags.get("git_commit") or "unknown",
        "data_md5": data_md5 or "unknown",
        "params_md5": hashlib.md5(params_json.encode()).hexdigest(),
        "run_id": run_id,
        "params": params_json,
    }


def version_tags(
    decision: Decision,
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    lineage_tags: dict[str, str],
    exports: dict[str, dict[str, Any]],
) -> dict[str, str]:
    """The few tags a person reads on the version page and the CLI filters on.

    Every number behind the decision (minimums, McNemar counts, export differences,
    params) is in the model card and in the run's `register/decision.json`; the run id is
    the version's own `run_id` field.
    """
    tags = {"decision": decision.outcome.value, "decision_reason": decision.reason}
    tags.update({f"test_{k}": str(candidate[k]) for k in GATE_METRICS if k in candidate})
    if decision.champion_version is not None:
        tags["compared_with"] = f"v{decision.champion_version}"
        if champion is not None and decision.metric in champion:
            tags["compared_with"] += f" ({decision.metric} {float(champion[decision.metric]):.4f})"
    tags.update({f"lineage.{k}": lineage_tags[k] for k in VERSION_LINEAGE if k in lineage_tags})
    failed = sorted(fmt for fmt, check in exports.items() if not check["passed"])
    tags["export.passed"] = str(not failed).lower()
    if failed:
        tags["export.failed"] = ",".join(failed)
    return tags


def compared_version(tags: dict[str, str]) -> str | None:
    """The champion version a registered version was compared with, from its tags."""
    value = tags.get("compared_with") or tags.get("gate.champion_version")  # older versions
    return value.split()[0].removeprefix("v") if value else None
