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
    """Every number behind the decision, flat, for the model version."""
    tags = {
        "decision": decision.outcome.value,
        "decision_reason": decision.reason,
        "gate.eligible": str(decision.eligible).lower(),
        "gate.metric": decision.metric,
        "gate.minimums": json.dumps([m.to_dict() for m in decision.minimums]),
        "run_id": lineage_tags["run_id"],
    }
    tags.update({f"test_{k}": str(candidate[k]) for k in GATE_METRICS if k in candidate})
    tags.update({f"lineage.{k}": v for k, v in lineage_tags.items()})
    if decision.champion_version is not None:
        tags["gate.champion_version"] = decision.champion_version
    if champion is not None:
        tags.update({f"champion_test_{k}": str(champion[k]) for k in GATE_METRICS if k in champion})
    if decision.mcnemar is not None:
        tags.update(
            {
                "gate.improvement": f"{decision.improvement:.6f}",
                "gate.mcnemar_b": str(decision.mcnemar.b),
                "gate.mcnemar_c": str(decision.mcnemar.c),
                "gate.p_value": f"{decision.mcnemar.p_value:.6g}",
                "gate.alpha": str(decision.alpha),
            }
        )
    for fmt, check in exports.items():
        tags[f"export.{fmt}.max_abs_diff"] = f"{check['max_abs_diff']:.3e}"
        tags[f"export.{fmt}.passed"] = str(check["passed"]).lower()
    tags["export.passed"] = str(all(c["passed"] for c in exports.values())).lower()
    return tags
