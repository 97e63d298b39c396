"""Search spaces: every bad input is one line naming the file and key, before any trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe.errors import ConfigError
from mlpipe.tune.apply import experiment_yaml
from mlpipe.tune.config import check, load_space, parse_space
from mlpipe.tune.trial import composed_params

ROOT = Path(__file__).resolve().parents[2]
P = Path("s.yaml")
GOOD: dict[str, Any] = {
    "fixed": ["train=smoke"],
    "space": {
        "train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "model": {"type": "categorical", "choices": ["cnn", "resnet"]},
        "train.batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
    },
}


def test_the_shipped_space_parses_and_composes():
    space = load_space(ROOT, "default")
    assert space.direction == "maximize" and space.objective == "val_accuracy"
    check(space, lambda overrides: composed_params(ROOT, overrides))


def test_overrides_are_what_dvc_exp_run_takes():
    space = parse_space(GOOD, P)
    overrides = space.overrides({"train.lr": 0.01, "model": "resnet", "train.batch_size": 64})
    assert overrides == ["train=smoke", "train.lr=0.01", "model=resnet", "train.batch_size=64"]
    assert space.direction == "maximize"
    assert parse_space(GOOD | {"objective": "val_loss"}, P).direction == "minimize"


def with_space(**dims: Any) -> dict[str, Any]:
    return GOOD | {"space": dims}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (GOOD | {"objective": "test_accuracy"},
         "s.yaml: objective: 'test_accuracy' is not a validation metric (val_accuracy or "
         "val_loss; the test set is kept for the pipeline's gates)"),
        (with_space(**{"train.lr": {"type": "float", "low": 0.1, "high": 0.1}}),
         "s.yaml: space.train.lr: empty range: low 0.1 must be below high 0.1"),
        (with_space(**{"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}),
         "s.yaml: space.train.lr: log: true needs low > 0, got 0.0"),
        (with_space(**{"data.image_size": {"type": "int", "low": 28, "high": 64}}),
         "s.yaml: space.data.image_size: only model, train, runtime keys can be searched "
         "(data and preprocess are fixed by the pipeline's processed data)"),
        (with_space(**{"train.lr": {"type": "float", "low": 0.1, "hihg": 1.0}}),
         "s.yaml: space.train.lr: hihg: not a setting of a float range "
         "(high, log, low, step, type)"),
        (with_space(**{"model": {"type": "categorical", "choices": []}}),
         "s.yaml: space.model: choices: must be a non-empty list"),
        (GOOD | {"trials": 0}, "s.yaml: trials: must be a whole number >= 1, got 0"),
        (GOOD | {"pruner": "asha"},
         "s.yaml: pruner: must be one of median, hyperband, none, got 'asha'"),
        (GOOD | {"space": {}}, "s.yaml: space: must map params keys to ranges, e.g. "
         "train.lr: {type: float, low: 0.001, high: 0.1, log: true}"),
    ],
)  # fmt: skip
def test_bad_spaces_are_one_line(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_space(raw, P)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ({"train.nope": {"type": "float", "low": 0.1, "high": 1.0}},
         "s.yaml: space.train.nope: no such key in params.yaml"),
        ({"model": {"type": "categorical", "choices": ["cnn", "transformer"]}},
         "s.yaml: space.model: 'transformer': "),
        ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}},
         "s.yaml: space.model.dropout: 1.0: "),
    ],
)  # fmt: skip
def test_keys_and_options_are_checked_by_composing(dims, message):
    space = parse_space(with_space(**dims), P)
    with pytest.raises(ConfigError) as info:
        check(space, lambda overrides: composed_params(ROOT, overrides))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_applied_experiment_composes_to_the_trials_params(tmp_path):
    """conf/experiment/<name>.yaml from a trial's overrides gives the same model, train and
    runtime sections as the overrides themselves (what the pipeline will train)."""
    overrides = ["train=smoke", "model=resnet", "train.lr=0.0123", "model.dropout=0.25"]
    text = experiment_yaml(overrides, {"model", "train", "runtime", "data"}, ["a header"])
    conf = tmp_path / "repo"
    import shutil

    shutil.copytree(ROOT / "conf", conf / "conf")
    shutil.copytree(ROOT / "hydra_plugins", conf / "hydra_plugins")
    (conf / "conf" / "experiment" / "tuned.yaml").write_text(text)
    direct = composed_params(conf, overrides)
    applied = composed_params(conf, ["experiment=tuned"])
    for section in ("model", "train", "runtime"):
        assert applied[section] == direct[section], section
    assert applied["model"]["arch"] == "resnet" and applied["train"]["lr"] == 0.0123
    assert yaml.safe_load(text)["defaults"] == [
        {"override /train": "smoke"},
        {"override /model": "resnet"},
    ]
