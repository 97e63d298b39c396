"""`mlpipe registry`: list, inspect, promote, roll back and compare registered versions.

    mlpipe registry list
    mlpipe registry describe 3
    mlpipe registry promote 3 [--alias champion] [--force --reason "hotfix"]
    mlpipe registry rollback [--alias champion]
    mlpipe registry compare 2 3

The model is `--name`, else `register.model_name` in params.yaml. `promote` runs the
register stage's gates (minimum metrics; against the champion: gain and McNemar on the
test set in --data) unless `--force`. Every alias move is recorded (version tag and a
history on the registered model), which is what `rollback` walks back. On any error
nothing in the registry changes and one line says why.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlpipe import registry, tracking
from mlpipe.config import GATE_METRICS, RegisterConfig, load_section, read_params
from mlpipe.data.dataset import load_dataset
from mlpipe.errors import ConfigError, MlpipeError, TrackingError
from mlpipe.evaluation.stats import mcnemar_exact

PROG = "mlpipe registry"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpipe", description="mlpipe command line")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{registry}")
    reg = groups.add_parser("registry", help="the MLflow Model Registry", description=__doc__)
    reg.formatter_class = argparse.RawDescriptionHelpFormatter
    reg.add_argument("--name", help="registered model (default: params.yaml register.model_name)")
    reg.add_argument("--params", type=Path, default=Path("params.yaml"))
    sub = reg.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with aliases and key metrics")
    describe = sub.add_parser("describe", help="one version: tags, lineage, card")
    describe.add_argument("version")
    promote = sub.add_parser("promote", help="point an alias at a version, through the gates")
    promote.add_argument("version")
    promote.add_argument("--alias", default=None, help="default: the champion alias")
    promote.add_argument("--force", action="store_true", help="skip the gates (recorded)")
    promote.add_argument("--reason", default="", help="why, for the history")
    promote.add_argument("--data", type=Path, default=None, help="processed dataset folder")
    rollback = sub.add_parser("rollback", help="give an alias back to its previous holder")
    rollback.add_argument("--alias", default=None, help="default: the champion alias")
    rollback.add_argument("--reason", default="", help="why, for the history")
    compare = sub.add_parser("compare", help="two versions side by side (+ McNemar)")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--data", type=Path, default=None, help="processed dataset folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, data = resolve(args)
        COMMANDS[args.command](args, cfg, data)
    except MlpipeError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def resolve(args: argparse.Namespace) -> tuple[RegisterConfig, Path]:
    """The register config (model name from --name wins) and the default test data."""
    params: dict[str, Any] = {}
    if args.params.exists():
        params = read_params(args.params)
    elif not args.name:
        raise ConfigError(f"{args.params}: not found; give --name or run in the repository")
    section = dict(params.get("register") or {})
    if args.name:
        section["model_name"] = args.name
    cfg: RegisterConfig = load_section({"register": section}, "register", str(args.params))
    processed = (params.get("paths") or {}).get("processed", "data/processed")
    return cfg, Path(getattr(args, "data", None) or processed)


def _alias(cfg: RegisterConfig, alias: str | None) -> str:
    alias = alias or cfg.champion_alias
    known = [cfg.champion_alias, cfg.challenger_alias]
    if alias not in known:
        raise TrackingError(f"unknown alias {alias!r} (known: {', '.join(known)})")
    return alias


def _metric(tags: dict[str, str], key: str) -> str:
    value = tags.get(f"test_{key}")
    return f"{float(value):.4f}" if value else "-"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def cmd_list(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    versions = tracking.list_versions(cfg.model_name)
    rows = [["version", "aliases", "decision", *GATE_METRICS, "created (UTC)", "run"]]
    for v in versions:
        rows.append(
            [
                v.version,
                ",".join(v.aliases) or "-",
                v.tags.get("decision", "-"),
                *(_metric(v.tags, k) for k in GATE_METRICS),
                _when(v.created_ms),
                (v.run_id or "-")[:12],
            ]
        )
    print(f"{cfg.model_name}: {len(versions)} version(s)")
    print(_columns(rows))


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def cmd_describe(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    v = tracking.get_version(cfg.model_name, args.version)
    print(f"{v.name} v{v.version}  aliases: {', '.join(v.aliases) or '-'}")
    print(f"run: {v.run_id}  created: {_when(v.created_ms)} UTC  uri: {v.uri}")
    print(f"source: {v.source}")
    for key in sorted(v.tags):
        value = v.tags[key]
        print(f"  {key} = {value if len(value) <= 120 else value[:117] + '...'}")


def _evaluate(uri: str, data: Path) -> tuple[registry.Evaluation, Any]:
    try:
        dataset = load_dataset(data)
    except MlpipeError as exc:
        raise TrackingError(f"the gates need the test set: {exc} (or use --force)") from None
    test, names = dataset.splits["test"], dataset.class_names
    labels = tracking.predict_labels(uri, test.images, names)
    try:
        return registry.evaluate_labels(test.labels, labels, names), test
    except ValueError as exc:
        raise TrackingError(f"{uri}: {exc}") from None


def gate(cfg: RegisterConfig, alias: str, version: tracking.VersionView, data: Path) -> str:
    """Run the register stage's gates for `version` -> `alias`; the reason, or raise."""
    checks = [] if version.tags.get("export.passed", "true") == "true" else ["exports failed"]
    candidate, _ = _evaluate(version.uri, data)
    champion, champion_version = None, None
    current = tracking.model_aliases(cfg.model_name).get(cfg.champion_alias)
    if alias == cfg.champion_alias and current is not None:
        champion_version = current
        champion, _ = _evaluate(f"models:/{cfg.model_name}/{current}", data)
    rules = RegisterConfig(**{**vars(cfg), "auto_promote": True})
    decision = registry.decide(candidate, champion, rules, champion_version, None, checks)
    if not decision.promote:
        raise TrackingError(f"gates refuse v{version.version} for @{alias}: {decision.reason}")
    return decision.reason if alias == cfg.champion_alias else "passes the minimums"


def cmd_promote(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    alias = _alias(cfg, args.alias)
    version = tracking.get_version(cfg.model_name, args.version)
    if alias in version.aliases:
        print(f"{cfg.model_name} v{version.version} already holds @{alias}: nothing changed")
        return
    if args.force:
        reason = f"forced: {args.reason or 'no reason given'}"
    else:
        reason = gate(cfg, alias, version, data) + (f"; {args.reason}" if args.reason else "")
    move = tracking.plan_alias_move(
        cfg.model_name, alias, version.version, "promote", reason, args.force
    )
    tracking.apply_alias_move(cfg.model_name, move)
    was = f"v{move.previous}" if move.previous else "unset"
    print(f"{cfg.model_name} @{alias}: {was} -> v{move.version} ({reason})")


def cmd_rollback(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    alias = _alias(cfg, args.alias)
    reason = f"rollback: {args.reason}" if args.reason else "rollback"
    move = tracking.plan_alias_move(cfg.model_name, alias, None, "rollback", reason)
    tracking.apply_alias_move(cfg.model_name, move)
    print(f"{cfg.model_name} @{alias}: v{move.previous} -> v{move.version} ({reason})")


def cmd_compare(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    a = tracking.get_version(cfg.model_name, args.a)
    b = tracking.get_version(cfg.model_name, args.b)
    rows = [["", f"v{a.version}", f"v{b.version}"]]
    rows.append(["aliases", ",".join(a.aliases) or "-", ",".join(b.aliases) or "-"])
    rows.append(["decision", a.tags.get("decision", "-"), b.tags.get("decision", "-")])
    rows += [[k, _metric(a.tags, k), _metric(b.tags, k)] for k in GATE_METRICS]
    for key in ("lineage.git_commit", "lineage.data_md5", "lineage.params_md5"):
        rows.append([key, a.tags.get(key, "-")[:12], b.tags.get(key, "-")[:12]])
    print(_columns(rows))
    if not (data / "test.npz").exists():
        print(f"(no test set in {data}: McNemar skipped)")
        return
    ev_a, _ = _evaluate(a.uri, data)
    ev_b, _ = _evaluate(b.uri, data)
    test = mcnemar_exact(ev_a.correct, ev_b.correct)
    print(
        f"on {test.n} test images: v{a.version} accuracy {ev_a.metrics['accuracy']:.4f}, "
        f"v{b.version} {ev_b.metrics['accuracy']:.4f}; McNemar b={test.b} "
        f"(only v{a.version} right) c={test.c} (only v{b.version} right) p={test.p_value:.3g}"
    )


COMMANDS = {
    "list": cmd_list,
    "describe": cmd_describe,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "compare": cmd_compare,
}


if __name__ == "__main__":
    sys.exit(main())
