"""Put a decided candidate into the registry: its version, its card, its aliases.

Called under `registry.locked(model)`, with a decision made against the champion read
under the same lock. Registering is idempotent per run: a rerun after a crash finishes
the version that run already has instead of adding another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipe.register import aliases
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Decision, Outcome
from mlpipe.tracking import registry, runs

log = logging.getLogger(__name__)
EXPORT_DIR = "export"  # where the exports go on the run
MODEL_CARD = "model_card.md"
DECISION_RECORD = "register/decision.json"


def publish(
    cfg: RegisterConfig,
    model_uri: str,
    run_id: str,
    decision: Decision,
    tags: dict[str, str],
    export_dir: Path,
    card: Callable[[str], str],
    record: dict[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """Register `model_uri` with `tags` (once per run), describe it with `card(version)`,
    log the exports, the card and the decision's full `record` (every number behind it:
    the version's tags keep only what a person reads) on its run, then move the aliases
    the decision allows.

    Returns the version and the aliases it got.
    """
    version = version_for_run(cfg.model_name, model_uri, run_id, tags)
    text = card(version)
    registry.set_version_description(cfg.model_name, version, text)
    with runs.resume_run(run_id):
        runs.log_artifacts(export_dir, EXPORT_DIR)
        runs.log_text(text, MODEL_CARD)
        if record is not None:
            runs.log_text(json.dumps(record, indent=2, sort_keys=True), DECISION_RECORD)
        runs.set_tags(
            {
                "registered_model": cfg.model_name,
                "registered_version": version,
                "registration_decision": decision.outcome.value,
                "registration_reason": decision.reason,
            }
        )
    return version, move_aliases(cfg, version, decision, tags)


def version_for_run(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """The run's version: the one an interrupted earlier attempt made, else a new one."""
    earlier = registry.versions_of_run(name, run_id)
    if not earlier:
        return registry.register(model_uri, name, tags)
    version = earlier[0].version
    log.info("run %s already has %s v%s: finishing it, not adding a version", run_id, name,
             version)  # fmt: skip
    registry.set_version_tags(name, version, tags)
    return version


def move_aliases(
    cfg: RegisterConfig, version: str, decision: Decision, tags: dict[str, str]
) -> list[str]:
    """Champion on promotion; otherwise challenger if this is the best unpromoted candidate."""
    if decision.outcome is Outcome.rejected:
        return []
    model = registry.get_model(cfg.model_name)
    if decision.promote:
        move = aliases.plan_move(model, cfg.champion_alias, version, "promote", decision.reason)
        aliases.apply_move(model, move, by="register stage")
        if model.aliases.get(cfg.challenger_alias) == version:
            registry.delete_alias(cfg.model_name, cfg.challenger_alias)
        return [cfg.champion_alias]
    holder = model.aliases.get(cfg.challenger_alias)
    held = None if holder is None else registry.get_version(cfg.model_name, holder, model)
    champion = model.aliases.get(cfg.champion_alias)
    if aliases.takes_challenger(version, tags, held, champion, cfg.metric):
        registry.set_alias(cfg.model_name, cfg.challenger_alias, version)
        return [cfg.challenger_alias]
    return []
