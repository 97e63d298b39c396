"""Stage `register`: new registry version as challenger; champion only if it beats the incumbent."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mlpipe import tracking
from mlpipe.cli import run_stage
from mlpipe.config import load_sections
from mlpipe.errors import ConfigError, DataError
from mlpipe.io import atomic_write_json
from mlpipe.registry import decide

log = logging.getLogger("mlpipe.register")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--train-report", type=Path, required=True, help="train.json")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="registration.json to write")
    return parser.parse_args(argv)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        cfg = load_sections(args.params, ["register", "tracking"])["register"]
        train, metrics = read_json(args.train_report), read_json(args.metrics)
        if cfg.metric not in metrics or not isinstance(metrics[cfg.metric], int | float):
            raise ConfigError(f"register.metric: {cfg.metric!r} is not a number in {args.metrics}")
        tracking.setup(train["experiment"])
        champion = tracking.version_for_alias(cfg.model_name, cfg.champion_alias)
        champion_value = (
            tracking.run_metric(champion.run_id, f"test_{cfg.metric}") if champion else None
        )
        decision = decide(
            cfg.metric,
            float(metrics[cfg.metric]),
            champion_value,
            str(champion.version) if champion else None,
        )
        tags = {
            f"test_{cfg.metric}": str(metrics[cfg.metric]),
            "run_id": train["run_id"],
            "decision": "champion" if decision.promote else "challenger",
            "decision_reason": decision.reason,
        }
        version = tracking.register(train["model_uri"], cfg.model_name, tags)
        tracking.set_alias(cfg.model_name, cfg.challenger_alias, version)
        if decision.promote:
            tracking.set_alias(cfg.model_name, cfg.champion_alias, version)
        with tracking.resume_run(train["run_id"]):
            tracking.set_tags(
                {
                    "registered_model": cfg.model_name,
                    "registered_version": version,
                    "registration_decision": tags["decision"],
                }
            )
        atomic_write_json(
            args.out,
            {
                "model_name": cfg.model_name,
                "version": version,
                "aliases": [cfg.challenger_alias]
                + ([cfg.champion_alias] if decision.promote else []),
                "run_id": train["run_id"],
                **decision.to_dict(),
            },
        )
        outcome = f"promoted to @{cfg.champion_alias}" if decision.promote else "kept as challenger"
        log.info("%s v%s %s: %s", cfg.model_name, version, outcome, decision.reason)

    return run_stage("register", body)


if __name__ == "__main__":
    sys.exit(main())
