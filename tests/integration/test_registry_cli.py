"""`mlpipe registry` against a real MLflow registry in a temporary SQLite store.

The models are tiny and exact: each predicts the class whose brightness centre is nearest
an image's mean pixel, so every gate outcome is known in advance. No mocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration.bands import BROKEN, CLASSES, PERFECT, WORSE, Bands, bands_split

from mlpipe.cli import main
from mlpipe.dataset import ImageDataset, save_dataset
from mlpipe.register.aliases import alias_history, parse_event
from mlpipe.tracking import logged_model, registry
from mlpipe.tracking import store as tracking_store

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A SQLite store with three logged models, a dataset folder and a params.yaml."""
    root = tmp_path_factory.mktemp("registry")
    split = bands_split()
    save_dataset(ImageDataset({"test": split}, CLASSES, "bands"), root / "processed")
    params = root / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {"register": {"model_name": "unused"}, "paths": {"processed": str(root / "processed")}}
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setattr(tracking_store, "_exported_uri", None)
        mp.setattr(tracking_store, "_user_override", None)
        tracking_store.setup("registry-cli")
        import mlflow

        uris = {}
        with mlflow.start_run():
            for key, centres in [("perfect", PERFECT), ("worse", WORSE), ("broken", BROKEN)]:
                uris[key] = logged_model.log_classifier(
                    Bands(centres).eval(), CLASSES, split.images[::40], name=key
                )
        yield {"uris": uris, "params": params, "data": root / "processed"}
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def register(store: dict[str, Any], name: str, *kinds: str) -> None:
    for kind in kinds:
        registry.register(store["uris"][kind], name, {"decision": "challenger", "kind": kind})


def cli(store: dict[str, Any], name: str, *args: str) -> int:
    return main(["registry", "--name", name, "--params", str(store["params"]), *args])


def snapshot(name: str) -> dict[str, Any]:
    """Everything a command could change: aliases, model tags, every version's tags."""
    return {
        "aliases": registry.model_aliases(name),
        "tags": registry.model_tags(name),
        "versions": {v.version: v.tags for v in registry.list_versions(name)},
    }


def test_promote_runs_the_gates(store, capsys):
    register(store, "gates", "worse", "perfect", "worse", "broken")
    assert cli(store, "gates", "promote", "1") == 0  # no champion yet: minimums only
    assert registry.model_aliases("gates") == {"champion": "1"}
    assert cli(store, "gates", "promote", "2") == 0  # perfect beats worse, significantly
    out = capsys.readouterr().out
    assert "@champion: v1 -> v2 (significantly better: accuracy 1.0000 vs champion v1" in out

    before = snapshot("gates")
    assert cli(store, "gates", "promote", "3") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlpipe registry promote: error: gates refuse v3 for @champion: ")
    assert "significantly worse" in err and "\n" not in err
    assert cli(store, "gates", "promote", "4") == 1
    err = capsys.readouterr().err
    assert "for @champion: rejected: accuracy 0.6667 < minimum 0.8500; " in err
    assert "worst_class_recall 0.0000 < minimum 0.5000" in err
    assert snapshot("gates") == before


def test_force_skips_the_gates_and_is_recorded(store, capsys):
    register(store, "forced", "perfect", "broken")
    assert cli(store, "forced", "promote", "1") == 0
    assert cli(store, "forced", "promote", "2", "--force", "--reason", "hotfix #12") == 0
    assert registry.model_aliases("forced") == {"champion": "2"}
    version = registry.get_version("forced", "2")
    last = parse_event(version.tags["champion.last_move"])
    assert last is not None and last["forced"] is True and last["reason"] == "forced: hotfix #12"
    assert " promote (forced) v2 (was v1) by " in version.tags["champion.last_move"]
    history = alias_history("forced", "champion")
    assert [(e["action"], e["version"], e["previous"], e["forced"]) for e in history] == [
        ("promote", "1", None, False),
        ("promote", "2", "1", True),
    ]
    assert "forced: hotfix #12" in capsys.readouterr().out


def test_promote_and_rollback_keep_one_champion_and_every_version(store, capsys):
    register(store, "seq", "worse", "perfect", "worse")
    steps = [
        (["promote", "1"], "1"),
        (["promote", "2"], "2"),
        (["promote", "3", "--force"], "3"),
        (["rollback"], "2"),
        (["rollback", "--reason", "bad latency"], "1"),
        (["promote", "3", "--force"], "3"),
        (["rollback"], "1"),
    ]
    for args, champion in steps:
        assert cli(store, "seq", *args) == 0, args
        aliases = registry.model_aliases("seq")
        assert [a for a in aliases if a == "champion"] == ["champion"]
        assert aliases["champion"] == champion, args
        assert [v.version for v in registry.list_versions("seq")] == ["1", "2", "3"]
    before = snapshot("seq")
    capsys.readouterr()
    assert cli(store, "seq", "rollback") == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "mlpipe registry rollback: error: @champion (v1) has no earlier holder recorded: "
        "nothing to roll back to"
    )
    assert snapshot("seq") == before
    actions = [(e["action"], e["version"]) for e in alias_history("seq", "champion")]
    assert actions[-2:] == [("promote", "3"), ("rollback", "1")]


@pytest.fixture(scope="module")
def errors_model(store: dict[str, Any]) -> str:
    register(store, "errors", "perfect")
    return "errors"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "nope", "list"], "list: error: no registered model 'nope' in sqlite:///"),
        (["describe", "99"], "describe: error: model 'errors' has no version 99"),
        (["describe", "v1"], "model 'errors' has no version 'v1' (versions are numbers)"),
        (["promote", "7"], "promote: error: model 'errors' has no version 7"),
        (["promote", "1", "--alias", "gold"], "unknown alias 'gold' (known: champion, challenger)"),
        (["rollback", "--alias", "prod"], "unknown alias 'prod' (known: champion, challenger)"),
        (["rollback"], "@champion (no version) has no earlier holder recorded"),
        (["compare", "1", "5"], "compare: error: model 'errors' has no version 5"),
        (
            ["promote", "1", "--data", "/nonexistent"],
            "the gates need the test set: /nonexistent/meta.json: missing",
        ),
    ],
)
def test_errors_are_one_line_and_change_nothing(errors_model, store, capsys, args, message):
    before = snapshot("errors")
    name = [] if args[0] == "--name" else ["--name", "errors"]
    assert main(["registry", *name, "--params", str(store["params"]), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert snapshot("errors") == before


def test_list_describe_and_compare(store, capsys):
    register(store, "views", "worse", "perfect")
    assert cli(store, "views", "promote", "1") == 0
    capsys.readouterr()
    assert cli(store, "views", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "views: 2 version(s)"
    assert lines[1].split()[:3] == ["version", "aliases", "decision"]
    assert lines[2].split()[:3] == ["1", "champion", "challenger"]
    assert lines[3].split()[:2] == ["2", "-"]
    assert cli(store, "views", "describe", "2") == 0
    out = capsys.readouterr().out
    assert out.startswith("views v2  aliases: -\n") and "  kind = perfect" in out
    assert cli(store, "views", "compare", "1", "2") == 0
    out = capsys.readouterr().out
    assert "McNemar b=0 (only v1 right)" in out and "v2 1.0000" in out


def test_options_after_the_verb_and_compare_defaults_to_champion_and_challenger(store, capsys):
    """`registry list --name X` works (options after the verb), and `compare` with no
    versions compares champion and challenger, listing the training params that differ."""
    import mlflow

    uris = []
    for lr in ("0.1", "0.01"):
        with mlflow.start_run():
            mlflow.log_params({"train.lr": lr, "train.epochs": "3"})
            split = bands_split()
            uris.append(
                logged_model.log_classifier(
                    Bands(PERFECT).eval(), CLASSES, split.images[::40], name="m"
                )
            )
    for uri in uris:
        registry.register(uri, "pair", {"decision": "challenger"})
    after = ["--name", "pair", "--params", str(store["params"])]
    capsys.readouterr()
    assert main(["registry", "compare", *after]) == 1  # no aliases yet: one line
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "mlpipe registry compare: error: pair has no @champion: give two versions to compare"
    ]
    registry.set_alias("pair", "champion", "1")
    registry.set_alias("pair", "challenger", "2")
    assert main(["registry", "list", *after]) == 0
    assert capsys.readouterr().out.startswith("pair: 2 version(s)\n")
    assert main(["registry", "compare", *after]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["v1", "v2"]
    assert ["param", "train.lr", "0.1", "0.01"] in rows
    assert not any(r[:2] == ["param", "train.epochs"] for r in rows)  # the same in both
