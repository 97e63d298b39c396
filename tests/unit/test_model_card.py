"""The model card is built from plain dicts."""

from __future__ import annotations

import numpy as np

from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Evaluation, decide
from mlpipe.register.model_card import build_model_card

METRICS = {
    "accuracy": 0.9157,
    "macro_f1": 0.9149,
    "worst_class_recall": 0.689,
    "n": 10000,
    "per_class": {
        "T-shirt/top": {"precision": 0.86, "recall": 0.899, "f1": 0.878, "support": 1000},
        "odd|name": {"precision": 0.7, "recall": 0.689, "f1": 0.73, "support": 1000},
    },
}


def card(champion: bool, metrics: dict | None = None) -> str:
    correct = np.ones(10, bool)
    champ = Evaluation(dict(METRICS, accuracy=0.9), correct) if champion else None
    decision = decide(Evaluation(METRICS, correct), champ, RegisterConfig(), "1" if champ else None)
    return build_model_card(
        model={"name": "fashion-mnist-classifier", "version": "2"},
        data={
            "source": "/usr/share/datasets/fashion-mnist",
            "class_names": ["T-shirt/top", "odd|name"],
            "md5": "abc.dir",
            "splits": {"train": 54000, "val": 6000, "test": 10000},
        },
        metrics=metrics or METRICS,
        decision=decision.to_dict(),
        lineage={"git_commit": "c0ffee", "data_md5": "abc.dir", "run_id": "r1", "params": "{}"},
        params={"train.lr": "0.003", "model.arch": "cnn"},
        exports={
            "onnx": {
                "max_abs_diff": 3e-8,
                "predictions_match": True,
                "n_images": 512,
                "passed": True,
            }
        },
        champion_metrics=dict(METRICS, accuracy=0.9) if champion else None,
        confusion_image="evaluation/confusion_matrix.png",
    )


def test_card_has_every_section_and_the_numbers():
    text = card(champion=True)
    assert text.startswith("# fashion-mnist-classifier v2\n")
    for heading in (
        "## Data",
        "## Test metrics",
        "### Per class",
        "## Promotion gates",
        "## Exports (checked against PyTorch)",
        "## Training parameters",
        "## Lineage",
    ):
        assert f"\n{heading}" in text
    assert "| accuracy | 0.9157 | 0.9000 |" in text
    assert "| T-shirt/top | 0.8600 | 0.8990 | 0.8780 | 1000 |" in text
    assert "| odd\\|name |" in text  # a pipe in a class name does not break the table
    assert "![Confusion matrix (test)](evaluation/confusion_matrix.png)" in text
    assert "McNemar p (exact, two-sided)" in text
    assert "| onnx | 3.00e-08 | yes | 512 | yes |" in text
    assert "| train.lr | 0.003 |" in text
    assert "- git_commit: `c0ffee`" in text and "params:" not in text
    assert "train 54,000" in text


def test_card_shows_calibration_and_top_confusions():
    text = card(champion=False)
    assert "### Calibration and mistakes" in text and "not reported" in text  # older evaluate
    metrics = dict(
        METRICS,
        calibration={
            "temperature": 1.5,
            "ece": 0.01,
            "ece_uncalibrated": 0.05,
            "nll": 0.2,
            "nll_uncalibrated": 0.3,
            "brier": 0.1,
            "brier_uncalibrated": 0.12,
        },
        top_confusions=[{"true": "Shirt", "predicted": "T-shirt/top", "count": 90, "share": 0.2}],
    )
    text = card(champion=False, metrics=metrics)
    assert "T = 1.5000" in text and "| ece | 0.0500 | 0.0100 |" in text
    assert "| Shirt | T-shirt/top | 90 | 0.2000 |" in text
    assert "![Reliability diagram (test)](evaluation/reliability_diagram.png)" in text
    assert "![Most confident mistakes (test)](evaluation/confident_mistakes.png)" in text


def test_card_without_champion_says_so():
    text = card(champion=False)
    assert "**Decision: promoted.** passes the minimums; no current champion" in text
    assert "no champion to compare with" in text
    assert "champion v" not in text.split("## Test metrics")[1].split("###")[0]
