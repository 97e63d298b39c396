"""The config as data: every conf/ option composes and validates, params.yaml is the
composition, dvc.yaml's `params:` match what each stage loads, and bad values fail
with a message naming the file and the key."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe.cli import compose
from mlpipe.config import Schema, load_section, load_sections, plain, read_params
from mlpipe.errors import ConfigError
from mlpipe.models import ARCHITECTURES

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "conf"
SCHEMALESS = {"paths"}  # reaches stages as flags, through dvc.yaml templating
COMBINATIONS = {"experiment"}  # groups that pick options of other groups (@package _global_)
NOT_PARAMS = {"tune"}  # conf/tune: search spaces for `mlpipe tune`, read by mlpipe.tune.config

GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name not in NOT_PARAMS
    for option in group.glob("*.yaml")
)
STAGES = sorted(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"])


def stage_sections(stage: str) -> dict[str, Schema]:
    """The sections `pipelines/<stage>.py` loads (its SECTIONS), each with its schema."""
    module = importlib.import_module(f"pipelines.{stage}")
    sections = module.SECTIONS
    assert isinstance(sections, dict) and sections, f"pipelines/{stage}.py: SECTIONS"
    return sections


SCHEMAS: dict[str, Schema] = {k: v for s in STAGES for k, v in stage_sections(s).items()}


def schemas(*names: str) -> dict[str, Schema]:
    return {name: SCHEMAS[name] for name in names}


@pytest.fixture(scope="module")
def default_params() -> dict[str, Any]:
    return yaml.safe_load(compose(REPO_ROOT, []))


def test_conf_has_options_to_test():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"data", "model", "train", "runtime", "preprocess", "experiment"} <= groups


def _own_values(group: str, option: str) -> dict[str, Any]:
    """An option file's values, without its defaults list."""
    text = (CONF / group / f"{option}.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text) or {}
    return {k: v for k, v in values.items() if k != "defaults"}


def _contains(section: dict[str, Any], values: dict[str, Any]) -> bool:
    for key, value in values.items():
        if isinstance(value, dict):
            if not _contains(section.get(key) or {}, value):
                return False
        elif section.get(key) != value:
            return False
    return True


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_option_composes_and_validates(group, option):
    params = yaml.safe_load(compose(REPO_ROOT, [f"{group}={option}"]))
    if group not in COMBINATIONS:
        own = _own_values(group, option)
        own = {k: v for k, v in own.items() if k not in _interpolated(own)}
        # the override took effect: the section holds this option's values ...
        assert _contains(params[group], own), f"{group}={option} did not take effect"
        if "defaults" not in (yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}):
            assert set(params[group]) == set(_own_values(group, option))  # ... and only those
    unknown = set(params) - set(SCHEMAS) - SCHEMALESS
    assert not unknown, f"sections no stage loads: {sorted(unknown)}"
    for name in sorted(set(params) - SCHEMALESS):
        load_section(params, name, SCHEMAS[name], where=f"conf {group}={option}")


def test_experiments_pick_options_of_other_groups():
    smoke = yaml.safe_load(compose(REPO_ROOT, ["experiment=smoke"]))
    assert smoke["data"]["source"] == "digits" and smoke["train"]["epochs"] == 2
    assert smoke["runtime"]["device"] == "cpu" and "experiment" not in smoke
    gpu = yaml.safe_load(compose(REPO_ROOT, ["experiment=resnet_gpu"]))
    assert gpu["model"]["arch"] == "resnet" and gpu["train"]["ema_decay"] == 0.999


def _default_option(group: str) -> str:
    defaults = yaml.safe_load((CONF / "config.yaml").read_text(encoding="utf-8"))["defaults"]
    return next(entry[group] for entry in defaults if isinstance(entry, dict) and group in entry)


def _interpolated(values: dict[str, Any]) -> set[str]:
    return {k for k, v in values.items() if isinstance(v, str) and "${" in v}


@pytest.mark.parametrize("section", sorted(set(SCHEMAS) - {"model"}))
def test_default_conf_equals_the_dataclass_defaults(default_params, section):
    """One source of truth: the option conf/config.yaml picks holds the schema's defaults
    (keys computed from another section, `${...}`, are not defaults)."""
    schema = SCHEMAS[section]
    assert isinstance(schema, type)
    defaults = plain(dataclasses.asdict(schema()))
    composed = default_params[section]
    source = (
        CONF / section / f"{_default_option(section)}.yaml" if (CONF / section).is_dir() else None
    )
    derived = _interpolated(_own_values(section, source.stem)) if source else set()
    differ = {
        k: (composed.get(k), defaults.get(k))
        for k in composed  # a key conf leaves out takes the dataclass default: no conflict
        if k not in derived and composed[k] != defaults.get(k)
    }
    assert not differ, f"{section}: conf vs dataclass defaults (conf, dataclass): {differ}"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_model_conf_equals_its_schema_defaults(arch):
    conf = _own_values("model", arch)
    defaults = plain(dataclasses.asdict(ARCHITECTURES[arch].config()))
    assert conf == defaults, f"conf/model/{arch}.yaml vs {ARCHITECTURES[arch].config.__name__}"


def test_committed_params_yaml_equals_composition():
    committed = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == compose(REPO_ROOT, []), (
        "params.yaml differs from the composition of conf/: run `make params`"
    )


def declared_sections(stage: dict[str, Any]) -> set[str]:
    sections: set[str] = set()
    for entry in stage.get("params", []):
        assert isinstance(entry, str), f"only params.yaml keys are supported, got {entry!r}"
        sections.add(entry.split(".")[0])
    return sections


def load_sections_args(module_path: Path) -> list[str]:
    """What each load_sections(...) call in the module passes as its schemas."""
    tree = ast.parse(module_path.read_text(encoding="utf-8"), filename=str(module_path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name == "load_sections" and len(node.args) >= 2:
            found.append(ast.unparse(node.args[1]))
    return found


def test_load_sections_args_reads_calls(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text("def main(args):\n    load_sections(args.params, SECTIONS)\n")
    assert load_sections_args(module) == ["SECTIONS"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_params_match_sections_it_loads(stage):
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    module = REPO_ROOT / "pipelines" / f"{stage}.py"
    assert module.is_file(), f"stage {stage!r} has no module {module}"
    # it loads exactly its SECTIONS, and those are the params dvc.yaml gives it
    assert load_sections_args(module) == ["SECTIONS"], f"{module.name}: load_sections(SECTIONS)"
    assert declared_sections(dvc["stages"][stage]) == set(stage_sections(stage)), (
        f"dvc.yaml stage {stage!r} params: vs SECTIONS of {module.name}"
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
    loaded = load_sections(path, schemas("data", "model", "train"))
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
        ("preprocess", "val_fraction", 1.5, "preprocess.val_fraction", "(0, 1)"),
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
        load_sections(path, schemas(section))
    message = str(info.value)
    assert str(path) in message
    assert f"{dotted}:" in message
    assert detail in message


def test_infinite_lr_is_rejected(default_params, tmp_path):
    path = write_params(tmp_path, with_value(default_params, "train", "lr", float("inf")))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_sections(path, schemas("train"))


@pytest.mark.parametrize("section", ["train", "model"])
def test_missing_section_names_file_and_section(default_params, tmp_path, section):
    params = copy.deepcopy(default_params)
    del params[section]
    path = write_params(tmp_path, params)
    with pytest.raises(ConfigError) as info:
        load_sections(path, schemas(section))
    assert "params.yaml" in str(info.value)
    assert repr(section) in str(info.value)


def test_section_that_is_not_a_mapping(default_params, tmp_path):
    params = copy.deepcopy(default_params)
    params["train"] = 5
    path = write_params(tmp_path, params)
    with pytest.raises(ConfigError, match=r"params\.yaml: train: expected a mapping"):
        load_sections(path, schemas("train"))


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
