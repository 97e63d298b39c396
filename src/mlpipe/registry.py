"""Champion/challenger decision: pure, so it is tested without a registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    metric: str, candidate: float, champion: float | None, champion_version: str | None
) -> Decision:
    """Promote iff there is no champion or the candidate is strictly better (higher)."""
    if champion is None:
        why = (
            "no current champion"
            if champion_version is None
            else (f"champion v{champion_version} has no recorded test_{metric}")
        )
        return Decision(True, why, metric, candidate, None, champion_version)
    if candidate > champion:
        why = f"test {metric} {candidate:.4f} beats champion v{champion_version} ({champion:.4f})"
        return Decision(True, why, metric, candidate, champion, champion_version)
    why = (
        f"test {metric} {candidate:.4f} does not beat champion v{champion_version} ({champion:.4f})"
    )
    return Decision(False, why, metric, candidate, champion, champion_version)
