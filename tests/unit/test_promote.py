"""The promotion decision shared by the register stage and `mlpipe registry promote`,
on crafted scores: the paths that need no registry (no champion, champion not asked for)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.dataset import ImageSplit
from mlpipe.errors import TrackingError
from mlpipe.register import promote
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Evaluation, Outcome
from mlpipe.tracking.registry import ModelView

NAMES = ["a", "b", "c"]
TEST = ImageSplit(np.zeros((6, 1, 2, 2), np.uint8), np.array([0, 1, 2, 0, 1, 2]))


def candidate(accuracy: float) -> Evaluation:
    metrics = {"accuracy": accuracy, "macro_f1": accuracy, "worst_class_recall": accuracy}
    return Evaluation(metrics, np.ones(len(TEST), bool))


def test_correctness_compares_predicted_names_with_the_test_labels():
    predicted = ["a", "b", "c", "b", "b", "a"]
    assert promote.correctness(predicted, TEST, NAMES).tolist() == [1, 1, 1, 0, 1, 0]


def test_correctness_needs_one_prediction_per_test_image():
    with pytest.raises(TrackingError, match="5 predictions for 6 test images"):
        promote.correctness(["a"] * 5, TEST, NAMES)


def test_no_registered_model_means_no_champion_to_beat():
    cfg = RegisterConfig(model_name="m")
    decision = promote.assess(cfg, candidate(0.95), None, TEST, NAMES, [])
    assert decision.outcome is Outcome.promoted and decision.champion_version is None


def test_failed_checks_reject_whatever_the_scores():
    cfg = RegisterConfig(model_name="m")
    decision = promote.assess(cfg, candidate(0.99), None, TEST, NAMES, ["onnx FAILED"])
    assert decision.outcome is Outcome.rejected and "onnx FAILED" in decision.reason


def test_minimums_only_when_the_champion_is_not_asked_for():
    """@challenger: the champion is not scored at all (a registered one would need MLflow)."""
    cfg = RegisterConfig(model_name="m")
    model = ModelView("m", {"champion": "1"}, {})
    decision = promote.assess(cfg, candidate(0.9), model, TEST, NAMES, [], against_champion=False)
    assert decision.promote and decision.champion_version is None


def test_manual_rules_promote_what_passes_even_with_auto_promote_off():
    cfg = RegisterConfig(model_name="m", auto_promote=False)
    assert promote.assess(cfg, candidate(0.95), None, TEST, NAMES, []).outcome is Outcome.challenger
    rules = promote.manual_rules(cfg)
    assert rules.auto_promote and not cfg.auto_promote
    assert promote.assess(rules, candidate(0.95), None, TEST, NAMES, []).promote
