"""The `mlpipe` command: `mlpipe registry ...`, `mlpipe params` and `mlpipe monitor`.

`mlpipe registry`: list, inspect, promote, roll back and compare registered versions.

    mlpipe registry list
    mlpipe registry describe 3
    mlpipe registry promote 3 [--alias champion] [--force --reason "hotfix"]
    mlpipe registry rollback [--alias champion]
    mlpipe registry compare 2 3        (no versions: champion and challenger)

Options go before or after the verb. The model is `--name`, else `register.model_name` in
params.yaml. `promote` runs the register stage's gates (minimum metrics; against the
champion: gain and McNemar on the test set in --data) unless `--force`. Every alias move is
recorded (version tag and a history on the registered model), which is what `rollback` walks
back. On any error nothing in the registry changes and one line says why.

`mlpipe params [OVERRIDES...]` writes params.yaml from conf/, as `dvc exp run` does.
`mlpipe params --check -S train.lr=0.01 -S model=vit` writes nothing: it composes those
overrides (each combination of a sweep) and checks every section with the stages' schemas,
one line for the first problem. Run it before `dvc exp run -S ...`, whose own composition
reports an unknown key or config group as a multi-line "unexpected error".

`mlpipe monitor --model models:/<name>@champion --images <folder or .npz>`: data checks
and drift against the version's training reference (mlpipe.monitor.command: exit codes).

`mlpipe serve [--model models:/<name>@champion] [--host 127.0.0.1] [--port 5001]`: the model
behind MLflow's scoring server and a guard that answers 415, 413 and 400 before MLflow
parses a request (mlpipe.tracking.guard).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlpipe.compose import compose, compose_checked, expand_sweeps
from mlpipe.config import load_section, read_params
from mlpipe.errors import ConfigError, MlpipeError, TrackingError, redact
from mlpipe.io import atomic_write_text
from mlpipe.monitor import command as monitor_command  # light: its body loads lazily
from mlpipe.register.config import GATE_METRICS, RegisterConfig
from mlpipe.runner import configure_logging, error_line
from mlpipe.tune import command as tune_command  # light: its body loads lazily

# MLflow, torch and scipy load in the commands that need them (seconds each): `--help`,
# `params` and `registry list` stay fast.
if TYPE_CHECKING:
    from mlpipe.dataset import ImageSplit
    from mlpipe.tracking.registry import ModelView, VersionView

PROG = "mlpipe registry"
PARAM_ROWS = 12  # differing params shown by `compare`
__all__ = ["compose", "main"]  # compose: mlpipe.compose's, here for `from mlpipe.cli import`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpipe", description="mlpipe command line")
    groups = parser.add_subparsers(
        dest="group", required=True, metavar="{registry,params,ui,monitor,serve,tune}"
    )
    reg = groups.add_parser("registry", help="the MLflow Model Registry", description=__doc__)
    reg.formatter_class = argparse.RawDescriptionHelpFormatter
    _model_options(reg, defaults=True)
    # the same options after the verb too (`registry list --name X`); there they default to
    # nothing, so a value given before the verb is kept
    after = argparse.ArgumentParser(add_help=False)
    _model_options(after, defaults=False)
    sub = reg.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with aliases and key metrics", parents=[after])
    describe = sub.add_parser("describe", help="one version: tags, lineage, card", parents=[after])
    describe.add_argument("version")
    promote_cmd = sub.add_parser(
        "promote", help="point an alias at a version, through the gates", parents=[after]
    )
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--alias", default=None, help="default: the champion alias")
    promote_cmd.add_argument("--force", action="store_true", help="skip the gates (recorded)")
    promote_cmd.add_argument("--reason", default="", help="why, for the history")
    promote_cmd.add_argument("--data", type=Path, default=None, help="processed dataset folder")
    rollback = sub.add_parser(
        "rollback", help="give an alias back to its previous holder", parents=[after]
    )
    rollback.add_argument("--alias", default=None, help="default: the champion alias")
    rollback.add_argument("--reason", default="", help="why, for the history")
    compare = sub.add_parser(
        "compare",
        help="two versions side by side (+ McNemar); default: champion and challenger",
        parents=[after],
    )
    compare.add_argument("a", nargs="?", help="default: the champion")
    compare.add_argument("b", nargs="?", help="default: the challenger")
    compare.add_argument("--data", type=Path, default=None, help="processed dataset folder")
    ui = groups.add_parser("ui", help="the MLflow UI on the local store, at the runs")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--params", type=Path, default=Path("params.yaml"))
    params = groups.add_parser("params", help="write params.yaml from conf/ (as dvc exp run)")
    params.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=cnn train.epochs=5"
    )
    params.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="an override as `dvc exp run -S` takes it (before the positional ones)",
    )
    params.add_argument(
        "--check", action="store_true", help="compose and validate every section; write nothing"
    )
    params.add_argument("--root", type=Path, default=Path.cwd(), help="the repository")
    params.add_argument("--out", type=Path, default=None, help="default: <root>/params.yaml")
    monitor_command.add_parser(groups)
    tune_command.add_parser(groups)
    serve = groups.add_parser(
        "serve", help="serve a registered model over HTTP, requests checked before MLflow"
    )
    serve.add_argument("--model", default=None, help="default: models:/<name>@champion")
    _model_options(serve, defaults=True)
    serve.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--max-batch", type=int, default=1024, help="images per request")
    serve.add_argument(
        "--sample-dir", type=Path, default=None,
        help="keep a sample of the answered requests here, for `mlpipe monitor --images`",
    )  # fmt: skip
    serve.add_argument("--sample-rate", type=float, default=0.1, help="share of requests kept")
    serve.add_argument(
        "--sample-max-images", type=int, default=10_000, help="the oldest files go beyond this"
    )
    return parser


def _model_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    unset = argparse.SUPPRESS
    parser.add_argument(
        "--name",
        default=None if defaults else unset,
        help="registered model (default: params.yaml register.model_name)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml") if defaults else unset)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "monitor":
        return monitor_command.main(args)
    if args.group == "tune":
        return tune_command.main(args)
    if args.group == "ui":
        try:
            run_ui(args)
        except MlpipeError as exc:
            print(error_line("mlpipe ui", exc), file=sys.stderr)
            return 1
        return 0
    if args.group == "serve":
        try:
            run_serve(args)
        except MlpipeError as exc:
            print(error_line("mlpipe serve", exc), file=sys.stderr)
            return 1
        return 0
    if args.group == "params":
        try:
            (check_params if args.check else write_params)(args)
        except MlpipeError as exc:
            print(f"mlpipe params: error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        cfg, data = resolve(args)
        COMMANDS[args.command](args, cfg, data)
    except MlpipeError as exc:
        print(error_line(f"{PROG} {args.command}", exc), file=sys.stderr)
        return 1
    return 0


def ui_url(host: str, port: int, experiment_id: str | None) -> str:
    """Where to point the browser: the experiment's runs, in the UI's model-training mode
    (the MLflow 3 UI otherwise starts in its GenAI mode: traces, judges, prompts)."""
    base = f"http://{host}:{port}"
    if not experiment_id:
        return base
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_ui(args: argparse.Namespace) -> None:
    """Print the runs URL, then become `mlflow ui` on the project's store."""
    from mlpipe.tracking import store

    uri = store.tracking_uri()
    if store.sqlite_path(uri) is None:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={redact(uri)}: not a local SQLite store; open that "
            "server's own UI (mlpipe ui serves the project's mlflow.db)"
        )
    params = read_params(args.params) if args.params.exists() else {}
    experiment = str((params.get("tracking") or {}).get("experiment", "mlpipe"))
    url = ui_url(args.host, args.port, store.experiment_id(experiment))
    print(f"MLflow UI for experiment {experiment!r}: {url}", file=sys.stderr, flush=True)
    cmd, env = store.ui_command(uri, args.host, args.port)
    os.execve(cmd[0], cmd, {**os.environ, **env})


def run_serve(args: argparse.Namespace) -> None:
    """Serve --model (default: the champion of --name or register.model_name) until ^C."""
    if args.max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, got {args.max_batch}")
    model = args.model
    if model is None:
        cfg, _ = resolve(args)
        model = f"models:/{cfg.model_name}@{cfg.champion_alias}"
    configure_logging()
    from mlpipe.tracking import server
    from mlpipe.tracking.capture import RequestSampler

    sampler = None
    if args.sample_dir is not None:
        sampler = RequestSampler(args.sample_dir, args.sample_rate, args.sample_max_images)
    server.serve(model, args.host, args.port, args.max_batch, sampler)


def write_params(args: argparse.Namespace) -> None:
    out = args.out or args.root / "params.yaml"
    atomic_write_text(out, compose_checked(args.root, args.set_param + args.overrides))
    print(f"wrote {out}", file=sys.stderr)


def check_params(args: argparse.Namespace) -> None:
    """Every combination composes and passes every stage's schema (pipelines/params.py)."""
    sections = _stage_sections(args.root)
    combinations = expand_sweeps(args.set_param + args.overrides)
    for overrides in combinations:
        params = yaml.safe_load(compose_checked(args.root, overrides))
        label = f"[{' '.join(overrides)}] " if len(combinations) > 1 else ""
        for name, schema in sections.items():
            try:
                load_section(params, name, schema, "params.yaml")
            except ConfigError as exc:
                raise ConfigError(f"{label}{exc}") from None
    n = len(combinations)
    print(
        f"mlpipe params: ok: {n} composition{'s' * (n > 1)}, every section valid", file=sys.stderr
    )


def _stage_sections(root: Path) -> dict[str, Any]:
    """The params stage's SECTIONS: every section with the schema of the stage reading it."""
    if not (root / "pipelines" / "params.py").is_file():
        raise ConfigError(f"{root}: no pipelines/params.py: run in the repository or give --root")
    sys.path.insert(0, str(root.resolve()))
    try:
        sections: dict[str, Any] = importlib.import_module("pipelines.params").SECTIONS
    finally:
        sys.path.pop(0)
    return sections


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
    cfg: RegisterConfig = load_section(
        {"register": section}, "register", RegisterConfig, str(args.params)
    )
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
    from mlpipe.tracking import registry

    versions = registry.list_versions(cfg.model_name)
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
    from mlpipe.tracking import registry

    v = registry.get_version(cfg.model_name, args.version)
    print(f"{v.name} v{v.version}  aliases: {', '.join(v.aliases) or '-'}")
    print(f"run: {v.run_id}  created: {_when(v.created_ms)} UTC  uri: {v.uri}")
    print(f"source: {v.source}")
    for key in sorted(v.tags):
        value = v.tags[key]
        print(f"  {key} = {value if len(value) <= 120 else value[:117] + '...'}")


def _test_set(data: Path) -> tuple[ImageSplit, list[str]]:
    from mlpipe.dataset import load_dataset

    try:
        dataset = load_dataset(data)
    except MlpipeError as exc:
        raise TrackingError(f"the gates need the test set: {exc} (or use --force)") from None
    return dataset.splits["test"], dataset.class_names


def gate(
    cfg: RegisterConfig, alias: str, version: VersionView, model: ModelView, data: Path
) -> str:
    """The register stage's gates for `version` -> `alias`; the reason, or raise."""
    from mlpipe.register import promote

    checks = [] if version.tags.get("export.passed", "true") == "true" else ["exports failed"]
    test, names = _test_set(data)
    candidate = promote.score_version(version.uri, test, names)
    against = alias == cfg.champion_alias
    rules = promote.manual_rules(cfg)
    decision = promote.assess(rules, candidate, model, test, names, checks, against)
    if not decision.promote:
        raise TrackingError(f"gates refuse v{version.version} for @{alias}: {decision.reason}")
    return decision.reason if against else "passes the minimums"


def cmd_promote(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    from mlpipe.register import aliases
    from mlpipe.tracking import registry

    alias = _alias(cfg, args.alias)
    with registry.locked(cfg.model_name):  # the gates compare with the champion of now
        model = registry.get_model(cfg.model_name)
        version = registry.get_version(cfg.model_name, args.version, model)
        if alias in version.aliases:
            print(f"{cfg.model_name} v{version.version} already holds @{alias}: nothing changed")
            return
        if args.force:
            reason = f"forced: {args.reason or 'no reason given'}"
        else:
            reason = gate(cfg, alias, version, model, data)
            reason += f"; {args.reason}" if args.reason else ""
        move = aliases.plan_move(model, alias, version.version, "promote", reason, args.force)
        aliases.apply_move(model, move)
        if alias == cfg.champion_alias and cfg.challenger_alias in version.aliases:
            registry.delete_alias(cfg.model_name, cfg.challenger_alias)  # promoted now
    was = f"v{move.previous}" if move.previous else "unset"
    print(f"{cfg.model_name} @{alias}: {was} -> v{move.version} ({reason})")


def cmd_rollback(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    from mlpipe.register import aliases
    from mlpipe.tracking import registry

    alias = _alias(cfg, args.alias)
    reason = f"rollback: {args.reason}" if args.reason else "rollback"
    with registry.locked(cfg.model_name):
        model = registry.get_model(cfg.model_name)
        move = aliases.plan_move(model, alias, None, "rollback", reason)
        aliases.apply_move(model, move)
    print(f"{cfg.model_name} @{alias}: v{move.previous} -> v{move.version} ({reason})")


def cmd_compare(args: argparse.Namespace, cfg: RegisterConfig, data: Path) -> None:
    from mlpipe.tracking import registry

    model = registry.get_model(cfg.model_name)
    a = registry.get_version(cfg.model_name, _holder(model, args.a, cfg.champion_alias), model)
    b = registry.get_version(cfg.model_name, _holder(model, args.b, cfg.challenger_alias), model)
    rows = [["", f"v{a.version}", f"v{b.version}"]]
    rows.append(["aliases", ",".join(a.aliases) or "-", ",".join(b.aliases) or "-"])
    rows.append(["decision", a.tags.get("decision", "-"), b.tags.get("decision", "-")])
    rows += [[k, _metric(a.tags, k), _metric(b.tags, k)] for k in GATE_METRICS]
    for key in ("lineage.git_commit", "lineage.data_md5"):
        rows.append([key, a.tags.get(key, "-")[:12], b.tags.get(key, "-")[:12]])
    rows += _param_rows(a, b)
    print(_columns(rows))
    if not (data / "test.index.npz").exists():
        print(f"(no test set in {data}: McNemar skipped)")
        return
    _mcnemar(a, b, data)


def _holder(model: ModelView, version: str | None, alias: str) -> str:
    """The version given, else the one holding `alias`."""
    if version:
        return version
    if alias not in model.aliases:
        raise TrackingError(f"{model.name} has no @{alias}: give two versions to compare")
    return model.aliases[alias]


def _param_rows(a: VersionView, b: VersionView) -> list[list[str]]:
    """The training params that differ between the two versions' runs."""
    from mlpipe.tracking.runs import get_run

    pa = get_run(a.run_id).params if a.run_id else {}
    pb = get_run(b.run_id).params if b.run_id else {}
    differ = sorted(k for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k))
    rows = [[f"param {k}", pa.get(k, "-"), pb.get(k, "-")] for k in differ[:PARAM_ROWS]]
    if len(differ) > PARAM_ROWS:
        rows.append([f"(+{len(differ) - PARAM_ROWS} more params differ)", "", ""])
    return rows or [["params", "identical", "identical"]]


def _mcnemar(a: VersionView, b: VersionView, data: Path) -> None:
    from mlpipe.evaluate.stats import mcnemar_exact
    from mlpipe.register import promote

    test, names = _test_set(data)
    ev_a = promote.score_version(a.uri, test, names)
    ev_b = promote.score_version(b.uri, test, names)
    result = mcnemar_exact(ev_a.correct, ev_b.correct)
    print(
        f"on {result.n} test images: v{a.version} accuracy {ev_a.metrics['accuracy']:.4f}, "
        f"v{b.version} {ev_b.metrics['accuracy']:.4f}; McNemar b={result.b} "
        f"(only v{a.version} right) c={result.c} (only v{b.version} right) "
        f"p={result.p_value:.3g}"
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
