"""`mlpipe params --check`: the overrides of a `dvc exp run -S ...` composed and checked
before the run, with one line for what is wrong. (`dvc exp run` itself composes before any
project code runs and reports an unknown key or group as DVC's multi-line "unexpected
error"; a bad value it lets through is stopped by the params stage.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN_KEYS = "epochs, batch_size, lr, weight_decay, schedule, warmup_fraction, label_smoothing"


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["params", "--check", "--root", str(REPO), *args])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err.splitlines()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["-S", "train.epoch=3"], f"train.epoch: no key 'epoch' in train (keys: {TRAIN_KEYS}, "),
        (
            ["-S", "model=nosuch"],
            "model=nosuch: no option 'nosuch' in config group 'model' (options: cnn, resnet, vit)",
        ),
        (["-S", "experiment=nope"], "experiment=nope: no option 'nope' in config group "),
        (
            ["-S", "model=vit", "-S", "model.patch=4"],
            "model.patch: no key 'patch' in model (keys: arch, image_size, patch_size, ",
        ),
        (
            ["-S", "train.augment.crop=2"],
            "train.augment.crop: no key 'crop' in train.augment (keys: crop_padding, hflip)",
        ),
        (["-S", "nosuch=1"], "nosuch: no key 'nosuch' at the top level (keys: data, "),
        (["-S", "train.lr=-1"], "params.yaml: train.lr: must be finite and > 0, got -1.0"),
        (["-S", "train.lr=abc"], "params.yaml: train.lr: Value 'abc' of type 'str' could not be"),
        (["-S", "register.alpha=2"], "params.yaml: register.alpha: must be in (0, 1), got 2.0"),
        (
            ["-S", "data=digits", "-S", "train.lr=0.1,-2"],
            "[data=digits train.lr=-2] params.yaml: train.lr: must be finite",
        ),
        (["-S", "train.lr=[1,"], "override 'train.lr=[1,': no viable alternative at input"),
        (["train.epoch=3"], "train.epoch: no key 'epoch' in train"),  # also as positionals
    ],
    ids=[
        "unknown-key",
        "unknown-option",
        "unknown-experiment",
        "unknown-key-of-chosen-option",
        "unknown-nested-key",
        "unknown-section",
        "bad-value",
        "wrong-type",
        "bad-value-of-a-later-stage",
        "bad-value-in-a-sweep",
        "bad-syntax",
        "positional",
    ],
)
def test_a_bad_override_is_one_line_naming_it_and_what_is_valid(capsys, args, line):
    code, err = check(capsys, *args)
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"mlpipe params: error: {line}"), err


def test_good_overrides_and_sweeps_pass_and_nothing_is_written(capsys):
    before = (REPO / "params.yaml").read_bytes()
    code, err = check(capsys, "-S", "experiment=smoke", "-S", "train.lr=0.001,0.003")
    assert code == 0
    assert err == ["mlpipe params: ok: 2 compositions, every section valid"]
    assert (REPO / "params.yaml").read_bytes() == before


def test_writing_params_with_a_bad_override_is_one_line_too(capsys, tmp_path):
    out = tmp_path / "params.yaml"
    code = main(["params", "--root", str(REPO), "--out", str(out), "-S", "model=nosuch"])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "mlpipe params: error: model=nosuch: no option 'nosuch' in config group 'model' "
        "(options: cnn, resnet, vit)"
    ]


def test_differing_keys_names_changed_added_and_removed_leaves():
    from mlpipe.compose import differing_keys, stale_message

    ours = {"train": {"lr": 0.1, "epochs": 3}, "model": {"arch": "cnn", "extra": 1}}
    theirs = {"train": {"lr": 0.2, "epochs": 3}, "model": {"arch": "cnn"}, "data": {"x": 1}}
    keys = differing_keys(ours, theirs)
    assert keys == ["data.x", "model.extra", "train.lr"]
    line = stale_message(Path("params.yaml"), keys, ours, theirs)
    assert "\n" not in line
    assert line.startswith(
        "params.yaml does not match conf/: data.x (<absent> here, 1 in conf/), "
        "model.extra (1 here, <absent> in conf/), train.lr (0.1 here, 0.2 in conf/). "
    )
    assert differing_keys(ours, ours) == []
