"""Alias moves with a history: MLflow keeps none, so the registered model's tags do.

Per alias, two registered-model tags: a stack of the versions that held the alias (what
rollback pops) and a log of moves (who, when, why, forced or not), one readable line per
move, oldest first, so the registry UI shows it as text rather than JSON:

    2026-12-04T03:00:12+00:00 promote v3 (was v1) by register stage: <reason>

The pure functions compute both; `plan_move` and `apply_move` read and write them through
tracking.registry.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlpipe.errors import TrackingError
from mlpipe.tracking import registry
from mlpipe.tracking.registry import ModelView, VersionView

MAX_STACK = 100
MAX_HISTORY_CHARS = 4500  # registered-model tag values are VARCHAR(5000) in SQL stores


def stack_tag(alias: str) -> str:
    return f"mlpipe.alias_stack.{alias}"


def history_tag(alias: str) -> str:
    return f"mlpipe.alias_history.{alias}"


def parse_json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def after_promotion(stack: list[str], current: str | None, version: str) -> list[str]:
    """The stack once `version` holds the alias: the current holder stays below it."""
    out = [str(v) for v in stack]
    if current is not None and (not out or out[-1] != current):
        out.append(current)  # e.g. an alias set before history was kept, or by hand
    if not out or out[-1] != version:
        out.append(version)
    return out[-MAX_STACK:]


def rollback_target(stack: list[str], current: str | None, alias: str) -> tuple[str, list[str]]:
    """The version that held the alias before `current`, and the stack after the rollback."""
    out = [str(v) for v in stack]
    while out and out[-1] == current:
        out.pop()
    if not out:
        held = f"v{current}" if current is not None else "no version"
        raise TrackingError(
            f"@{alias} ({held}) has no earlier holder recorded: nothing to roll back to"
        )
    return out[-1], out


_EVENT = re.compile(
    r"(?P<at>\S+) (?P<action>\w+)(?P<forced> \(forced\))? v(?P<version>\S+)"
    r" \(was (?:v(?P<previous>\S+)|none)\) by (?P<by>.*?): (?P<reason>.*)"
)


def format_event(event: dict[str, Any]) -> str:
    """One move as one line of text (newlines in the reason become spaces)."""
    forced = " (forced)" if event.get("forced") else ""
    was = f"v{event['previous']}" if event.get("previous") is not None else "none"
    reason = " ".join(str(event.get("reason", "")).split())
    return (
        f"{event['at']} {event['action']}{forced} v{event['version']} (was {was})"
        f" by {event['by']}: {reason}"
    )


def parse_event(line: str) -> dict[str, Any] | None:
    found = _EVENT.fullmatch(line.strip())
    if found is None:
        return None
    event: dict[str, Any] = found.groupdict()
    event["forced"] = bool(event["forced"])
    return event


def format_history(events: list[dict[str, Any]]) -> str:
    return "\n".join(format_event(e) for e in events)


def parse_history(text: str | None) -> list[dict[str, Any]]:
    """The moves in a history tag: readable lines, or the JSON list older mlpipe wrote."""
    if text and text.lstrip().startswith("["):
        return [e for e in parse_json_list(text) if isinstance(e, dict)]
    parsed = (parse_event(line) for line in (text or "").splitlines() if line.strip())
    return [e for e in parsed if e is not None]


def append_event(events: list[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    """Add a move to the log, dropping the oldest while it is too long for a tag."""
    out = [*events, event]
    while len(out) > 1 and len(format_history(out)) > MAX_HISTORY_CHARS:
        out.pop(0)
    return out


def takes_challenger(
    version: str,
    tags: dict[str, str],
    holder: VersionView | None,
    champion: str | None,
    metric: str,
) -> bool:
    """Whether `version` (its registry `tags`) should hold `challenger`, which names the
    best candidate that is not the champion: better on `metric` than the holder, or the
    holder is missing, is the champion, or was scored on other data (no fair comparison).
    Ties keep the holder."""
    if version == champion:
        return False
    if holder is None or holder.version == champion or holder.version == version:
        return True
    data = "lineage.data_md5"
    if holder.tags.get(data) != tags.get(data):
        return True
    try:
        return float(tags[f"test_{metric}"]) > float(holder.tags[f"test_{metric}"])
    except (KeyError, ValueError):
        return True


# -- reading and writing them ----------------------------------------------------------


@dataclass
class AliasMove:
    alias: str
    version: str
    previous: str | None
    action: str  # promote | rollback
    forced: bool
    reason: str


def plan_move(
    model: ModelView,
    alias: str,
    version: str | None,
    action: str,
    reason: str,
    forced: bool = False,
) -> AliasMove:
    """Check a move and work out its target without changing anything.

    `version` is the target of a promote; a rollback finds it in the alias's history.
    """
    current = model.aliases.get(alias)
    if action == "rollback":
        stack = parse_json_list(model.tags.get(stack_tag(alias)))
        version, _ = rollback_target(stack, current, alias)
    if version is None:
        raise TrackingError(f"{action}: no version given")
    registry.get_version(model.name, version, model)  # the target must exist
    return AliasMove(alias, str(version), current, action, forced, reason)


def apply_move(model: ModelView, move: AliasMove, by: str | None = None) -> None:
    """Move the alias and record it: history tags on the model, a tag on the version."""
    stack = parse_json_list(model.tags.get(stack_tag(move.alias)))
    if move.action == "rollback":
        _, stack = rollback_target(stack, move.previous, move.alias)
    else:
        stack = after_promotion(stack, move.previous, move.version)
    event = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": move.action,
        "version": move.version,
        "previous": move.previous,
        "by": by or _user(),
        "forced": move.forced,
        "reason": move.reason,
    }
    history = append_event(parse_history(model.tags.get(history_tag(move.alias))), event)
    version_tags = {f"{move.alias}.last_move": format_event(event)}
    model_tags = {
        stack_tag(move.alias): json.dumps(stack),
        history_tag(move.alias): format_history(history),
    }
    registry.move_alias(model.name, move.alias, move.version, version_tags, model_tags)


def alias_history(name: str, alias: str) -> list[dict[str, Any]]:
    return parse_history(registry.model_tags(name).get(history_tag(alias)))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
