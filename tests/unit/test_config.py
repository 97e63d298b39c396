"""The config as data: every conf/ option composes and validates, params.yaml is the
composition, dvc.yaml's `params:` match what each stage loads, and bad values fail
with a message naming the file and the key."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe.config import SECTIONS, load_section, load_sections, read_params
from mlpipe.errors import ConfigError
from mlpipe.params import compose

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "conf"
SCHEMALESS = {"paths"}  # reaches stages as flags, through dvc.yaml templating

GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir()
    for option in group.glob("*.yaml")
)
STAGES = sorted(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"])


@pytest.fixture(scope="module")
def default_params() -> dict[str, Any]:
    return yaml.safe_load(compose(REPO_ROOT, []))


def test_conf_has_options_to_test():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"data", "model", "train"} <= groups


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_option_composes_and_validates(group, option):
    params = yaml.safe_load(compose(REPO_ROOT, [f"{group}={option}"]))
    option_values = yaml.safe_load((CONF / group / f"{option}.yaml").read_text(encoding="utf-8"))
    # the override took effect: the section holds exactly this option's keys
    assert set(params[group]) == set(option_values)
    unknown = set(params) - set(SECTIONS) - {"model"} - SCHEMALESS
    assert not unknown, f"sections without a schema in mlpipe.config: {sorted(unknown)}"
    for name in sorted(set(params) - SCHEMALESS):
        load_section(params, name, where=f"conf {group}={option}")


def test_committed_params_yaml_equals_composition():
    committed = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == compose(REPO_ROOT, []), (
        "params.yaml differs from the composition of conf/: run `make params`"
    )


def _literal_strings(node: ast.AST, where: str) -> list[str]:
    value = ast.literal_eval(node)
    assert isinstance(value, list), f"{where}: expected a list literal of section names"
    assert all(isinstance(v, str) for v in value), f"{where}: section names must be strings"
    return value


def sections_loaded_by(module_path: Path) -> set[str]:
    """Section names passed to load_sections(...) or assigned to a module-level SECTIONS."""
    tree = ast.parse(module_path.read_text(encoding="utf-8"), filename=str(module_path))
    assigned = {
        target.id: stmt.value
        for stmt in tree.body
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    found: set[str] = set()
    if "SECTIONS" in assigned:
        found.update(_literal_strings(assigned["SECTIONS"], f"{module_path}: SECTIONS"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "load_sections" or len(node.args) < 2:
            continue
        arg = node.args[1]
        if isinstance(arg, ast.Name):
            assert arg.id in assigned, f"{module_path}: cannot resolve {arg.id}"
            arg = assigned[arg.id]
        found.update(_literal_strings(arg, f"{module_path}: load_sections"))
    return found


def declared_sections(stage: dict[str, Any]) -> set[str]:
    sections: set[str] = set()
    for entry in stage.get("params", []):
        assert isinstance(entry, str), f"only params.yaml keys are supported, got {entry!r}"
        sections.add(entry.split(".")[0])
    return sections


def test_sections_loaded_by_reads_both_forms(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text(
        'SECTIONS = ["model", "train"]\n'
        "def main(args):\n"
        '    load_sections(args.params, ["tracking"])\n'
        "    load_sections(args.params, SECTIONS)\n"
    )
    assert sections_loaded_by(module) == {"model", "train", "tracking"}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_params_match_sections_it_loads(stage):
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    module = REPO_ROOT / "pipelines" / f"{stage}.py"
    assert module.is_file(), f"stage {stage!r} has no module {module}"
    loaded = sections_loaded_by(module)
    assert loaded, f"{module}: found no load_sections([...]) or SECTIONS = [...]"
    assert declared_sections(dvc["stages"][stage]) == loaded, (
        f"dvc.yaml stage {stage!r} params: vs sections loaded by {module.name}"
    )


def write_params(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def with_value(params: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(params)
    changed[section][key] = value
    return changed


def test_default_sections_load(default_params, tmp_path):
    path = write_params(tmp_path, default_params)
    loaded = load_sections(path, ["data", "model", "train"])
    assert loaded["train"].epochs == default_params["train"]["epochs"]
    assert loaded["model"].channels == default_params["model"]["channels"]
    assert loaded["data"].class_names == default_params["data"]["class_names"]


@pytest.mark.parametrize(
    ("section", "key", "value", "dotted", "detail"),
    [
        ("train", "epoch", 3, "train.epoch", "not in"),
        ("train", "epochs", "three", "train.epochs", "three"),
        ("train", "lr", -1, "train.lr", "must be finite and > 0"),
        ("train", "schedule", "linear", "train.schedule", "linear"),
        ("data", "val_fraction", 1.5, "data.val_fraction", "(0, 1)"),
        ("model", "arch", "mlp", "model.arch", "unknown architecture"),
        ("model", "dropout", 1.0, "model.dropout", "[0, 1)"),
        ("validate", "checks", {"schema": "fatal"}, "validate.checks.schema", "fatal"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "negative-lr",
        "bad-enum",
        "bad-val-fraction",
        "unknown-arch",
        "dropout-1",
        "nested-enum",
    ],
)
def test_bad_value_names_file_and_key(
    default_params, tmp_path, section, key, value, dotted, detail
):
    path = write_params(tmp_path, with_value(default_params, section, key, value))
    with pytest.raises(ConfigError) as info:
        load_sections(path, [section])
    message = str(info.value)
    assert str(path) in message
    assert f"{dotted}:" in message
    assert detail in message


def test_infinite_lr_is_rejected(default_params, tmp_path):
    path = write_params(tmp_path, with_value(default_params, "train", "lr", float("inf")))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_sections(path, ["train"])


@pytest.mark.parametrize("section", ["train", "model"])
def test_missing_section_names_file_and_section(default_params, tmp_path, section):
    params = copy.deepcopy(default_params)
    del params[section]
    path = write_params(tmp_path, params)
    with pytest.raises(ConfigError) as info:
        load_sections(path, [section])
    assert "params.yaml" in str(info.value)
    assert repr(section) in str(info.value)


def test_section_that_is_not_a_mapping(default_params, tmp_path):
    params = copy.deepcopy(default_params)
    params["train"] = 5
    path = write_params(tmp_path, params)
    with pytest.raises(ConfigError, match=r"params\.yaml: train: expected a mapping"):
        load_sections(path, ["train"])


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope" / "params.yaml"
    with pytest.raises(ConfigError, match="cannot read") as info:
        read_params(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "detail"),
    [("train: [1, 2\n", "not valid YAML"), ("- just\n- a list\n", "mapping at the top level")],
    ids=["invalid-yaml", "not-a-mapping"],
)
def test_invalid_yaml_names_file(tmp_path, text, detail):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=detail) as info:
        read_params(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_names_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        read_params(path)
    assert str(path) in str(info.value)
