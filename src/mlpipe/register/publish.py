"""Put a decided candidate into the registry: a new version, its card, its aliases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlpipe.register import aliases
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Decision, Outcome
from mlpipe.tracking import registry, runs

EXPORT_DIR = "export"  # where the exports go on the run
MODEL_CARD = "model_card.md"


def publish(
    cfg: RegisterConfig,
    model_uri: str,
    run_id: str,
    decision: Decision,
    tags: dict[str, str],
    export_dir: Path,
    card: Callable[[str], str],
) -> tuple[str, list[str]]:
    """Register `model_uri` with `tags`, describe it with `card(version)`, log the exports
    and the card on its run, then move the aliases the decision allows.

    Returns the new version and the aliases it got.
    """
    version = registry.register(model_uri, cfg.model_name, tags)
    text = card(version)
    registry.set_version_description(cfg.model_name, version, text)
    with runs.resume_run(run_id):
        runs.log_artifacts(export_dir, EXPORT_DIR)
        runs.log_text(text, MODEL_CARD)
        runs.set_tags(
            {
                "registered_model": cfg.model_name,
                "registered_version": version,
                "registration_decision": decision.outcome.value,
                "registration_reason": decision.reason,
            }
        )
    given = []
    if decision.outcome is not Outcome.rejected:
        registry.set_alias(cfg.model_name, cfg.challenger_alias, version)
        given.append(cfg.challenger_alias)
    if decision.promote:
        model = registry.get_model(cfg.model_name)
        move = aliases.plan_move(model, cfg.champion_alias, version, "promote", decision.reason)
        aliases.apply_move(model, move, by="register stage")
        given.append(cfg.champion_alias)
    return version, given
