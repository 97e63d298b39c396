"""The params stage: first in the DAG, it checks every section with the schema of the stage
that reads it, so a bad value stops `dvc repro` before DVC removes any stage's outputs; its
output does not change with the values, so it reruns nothing downstream by itself.
(The real `dvc exp run` of it: tests/integration/test_pipeline_e2e.py.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines import params as params_stage

from mlpipe.cli import compose

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
OUT = "${paths.reports}/params.json"


@pytest.fixture(scope="module")
def default_params() -> dict[str, Any]:
    return yaml.safe_load(compose(REPO, []))


def write(tmp_path: Path, params: dict[str, Any], name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def test_it_checks_every_section_with_the_schema_of_each_stage_that_reads_it(default_params):
    others = [s for s in DVC["stages"] if s != "params"]
    assert [m.__name__.split(".")[-1] for m in params_stage.STAGE_MODULES] == others
    for module in params_stage.STAGE_MODULES:
        for name, schema in module.SECTIONS.items():
            assert params_stage.SECTIONS[name] is schema, f"{module.__name__}: {name}"
    assert set(params_stage.SECTIONS) == set(default_params) - {"paths"}


def _inputs(stage: dict[str, Any]) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _outputs(stage: dict[str, Any]) -> list[str]:
    entries = [e for key in ("outs", "metrics", "plots") for e in stage.get(key, [])]
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def test_every_other_stage_runs_after_it():
    """DVC runs a stage after the stages whose outputs it depends on: each stage must reach
    the params stage's output through its deps, or it could run (and lose its outputs)
    before the check."""
    made_by = {out: name for name, stage in DVC["stages"].items() for out in _outputs(stage)}
    assert made_by[OUT] == "params"
    assert _inputs(DVC["stages"]["params"]) == ["conf", "hydra_plugins", "pipelines", "src/mlpipe"]

    def upstream(name: str) -> set[str]:
        found = {made_by[d] for d in _inputs(DVC["stages"][name]) if d in made_by}
        return found.union(*(upstream(s) for s in found))

    assert all("params" in upstream(s) for s in DVC["stages"] if s != "params")
    assert next(iter(DVC["stages"])) == "params"
    out = next(e for e in DVC["stages"]["params"]["outs"] if OUT in e)[OUT]
    assert out == {"cache": False, "persist": True}  # a rejected params.yaml leaves it there


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("data", "test_fraction", 2.0, "data.test_fraction: must be in (0, 1), got 2.0"),
        ("preprocess", "val_fraction", 1.5, "preprocess.val_fraction: must be in (0, 1)"),
        ("model", "dropout", 1.0, "model.dropout: must be in [0, 1), got 1.0"),
        ("train", "lr", -1, "train.lr: must be finite and > 0, got -1.0"),
        ("train", "epoch", 3, "train.epoch: Key 'epoch' not in 'TrainConfig' (keys: epochs, "),
        ("runtime", "device", "tpu", "runtime.device: Invalid value 'tpu'"),
        ("tracking", "experiment", "", "tracking.experiment: must not be empty"),
        ("validate", "max_leakage", -1, "validate.max_leakage: must be >= 0, got -1"),
        ("evaluate", "batch_size", 0, "evaluate.batch_size: must be > 0, or null, got 0"),
        ("register", "alpha", 2, "register.alpha: must be in (0, 1), got 2.0"),
    ],
)
def test_a_bad_value_in_any_section_is_one_line_and_leaves_the_output(
    default_params, tmp_path, capsys, section, key, value, message
):
    params = copy.deepcopy(default_params)
    params[section][key] = value
    path, out = write(tmp_path, params), tmp_path / "params.json"
    out.write_bytes(b"earlier\n")
    assert params_stage.main(["--params", str(path), "--out", str(out)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"params: error: {path}: {message}"), lines
    assert out.read_bytes() == b"earlier\n"


def test_output_bytes_do_not_depend_on_the_values(tmp_path, monkeypatch):
    """So a rerun with other good values leaves ingest (and so every stage) up to date."""
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")  # overrides: composed by `dvc exp run`
    outs = []
    for i, overrides in enumerate(
        [[], ["model=vit", "data=digits", "train.lr=0.1", "register.alpha=0.01"], ["model=resnet"]]
    ):
        path = write(tmp_path, yaml.safe_load(compose(REPO, overrides)), f"p{i}.yaml")
        out = tmp_path / f"out{i}.json"
        assert params_stage.main(["--params", str(path), "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert b"checked_sections" in outs[0] and b"0.1" not in outs[0]


def stage_args(path: Path, out: Path) -> list[str]:
    return ["--params", str(path), "--out", str(out), "--conf", str(REPO / "conf")]


def test_params_yaml_that_is_not_the_composition_of_conf_is_refused_outside_experiments(
    default_params, tmp_path, capsys, monkeypatch
):
    """Plain `dvc repro` after an edit in conf/ (params.yaml not recomposed) must not run on
    the stale values; the stage depends on conf/, so DVC reruns it on such an edit."""
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params = copy.deepcopy(default_params)
    params["train"]["lr"] = 0.5
    path, out = write(tmp_path, params), tmp_path / "params.json"
    out.write_bytes(b"earlier\n")
    assert params_stage.main(stage_args(path, out)) == 1
    lines = capsys.readouterr().err.splitlines()
    lr = default_params["train"]["lr"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"params: error: {path} does not match conf/: train.lr (0.5 here, {lr} in conf/). "
        "It is generated: run `make params`"
    ), lines
    assert out.read_bytes() == b"earlier\n"
    # inside `dvc exp run` params.yaml is DVC's own composition with the -S overrides
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    assert params_stage.main(stage_args(path, out)) == 0


def test_the_composition_of_conf_passes(default_params, tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    path, out = write(tmp_path, default_params), tmp_path / "params.json"
    assert params_stage.main(stage_args(path, out)) == 0
    assert out.exists()
