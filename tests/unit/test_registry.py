"""Promotion gates, lineage and alias history: pure logic, crafted predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpipe.errors import TrackingError
from mlpipe.register.aliases import (
    after_promotion,
    append_event,
    format_history,
    parse_history,
    rollback_target,
    takes_challenger,
)
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import (
    Evaluation,
    Outcome,
    agreement_problem,
    decide,
    evaluate_labels,
)
from mlpipe.register.lineage import compared_version, dvc_dep_hash, lineage, version_tags
from mlpipe.tracking.registry import VersionView

N = 1000


def model(correct: np.ndarray, **overrides: float) -> Evaluation:
    acc = float(np.mean(correct))
    metrics = {"accuracy": acc, "macro_f1": acc, "worst_class_recall": acc, **overrides}
    return Evaluation(metrics, correct)


def right(count: int, start: int = 0) -> np.ndarray:
    """Correct on images start .. start+count-1 of N."""
    out = np.zeros(N, bool)
    out[start : start + count] = True
    return out


CHAMPION = model(right(900))  # accuracy 0.90


def test_no_champion_passes_minimums_and_is_promoted():
    decision = decide(model(right(920)), None, RegisterConfig())
    assert decision.outcome is Outcome.promoted and decision.promote and decision.eligible
    assert decision.reason == "passes the minimums; no current champion"
    assert decision.mcnemar is None and decision.champion is None


def test_clear_win_is_promoted_with_its_evidence():
    decision = decide(model(right(960)), CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.promoted
    assert decision.mcnemar is not None
    assert (decision.mcnemar.b, decision.mcnemar.c) == (0, 60)
    assert decision.mcnemar.p_value < 1e-15
    assert decision.improvement == pytest.approx(0.06)
    assert decision.reason.startswith("significantly better: accuracy 0.9600 vs champion v3")
    assert "b=0 c=60" in decision.reason


def test_tie_keeps_the_champion():
    decision = decide(model(right(900)), CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.challenger and not decision.eligible
    assert decision.mcnemar is not None and decision.mcnemar.p_value == 1.0
    assert decision.reason.startswith("gain below 0.002")


def test_same_accuracy_different_errors_is_a_tie_too():
    swapped = right(900, start=50)  # 50 wins, 50 losses against the champion
    decision = decide(model(swapped), CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.challenger
    assert decision.mcnemar is not None
    assert (decision.mcnemar.b, decision.mcnemar.c) == (50, 50)


def test_small_gain_without_significance_is_not_promoted():
    cand = right(905)  # c=5, b=0: p = 0.0625
    decision = decide(model(cand), CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.challenger
    assert decision.reason.startswith("not significant at alpha 0.05")
    assert decide(model(cand), CHAMPION, RegisterConfig(alpha=0.1)).promote


def test_significant_gain_below_the_required_improvement_is_not_promoted():
    decision = decide(model(right(930)), CHAMPION, RegisterConfig(min_improvement=0.05))
    assert decision.outcome is Outcome.challenger
    assert decision.reason.startswith("gain below 0.05")


def test_significant_loss_is_kept_as_challenger_and_says_so():
    decision = decide(model(right(860)), CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.challenger and not decision.eligible
    assert decision.mcnemar is not None and (decision.mcnemar.b, decision.mcnemar.c) == (40, 0)
    assert decision.reason.startswith("significantly worse: accuracy 0.8600 vs champion v3")


def test_below_a_minimum_metric_is_rejected_before_any_comparison():
    weak = model(right(990), worst_class_recall=0.3)
    decision = decide(weak, CHAMPION, RegisterConfig(), champion_version="3")
    assert decision.outcome is Outcome.rejected and not decision.eligible
    assert decision.reason == "rejected: worst_class_recall 0.3000 < minimum 0.5000"
    assert decision.mcnemar is None
    failed = [m.metric for m in decision.minimums if not m.passed]
    assert failed == ["worst_class_recall"]


def test_failed_checks_reject():
    decision = decide(model(right(990)), None, RegisterConfig(), failed_checks=["onnx FAILED"])
    assert decision.outcome is Outcome.rejected
    assert decision.reason == "rejected: onnx FAILED"


def test_manual_promotion_mode_records_eligibility_only():
    decision = decide(model(right(960)), CHAMPION, RegisterConfig(auto_promote=False))
    assert decision.outcome is Outcome.challenger and decision.eligible
    assert "auto_promote is off" in decision.reason


def test_champion_that_cannot_be_evaluated_blocks_automatic_promotion():
    decision = decide(model(right(990)), None, RegisterConfig(), "4", "predicts labels outside")
    assert decision.outcome is Outcome.challenger and not decision.eligible
    assert decision.reason == "champion v4 could not be evaluated: predicts labels outside"


def test_missing_metric_is_an_error():
    with pytest.raises(ValueError, match="lack macro_f1"):
        decide(
            Evaluation({"accuracy": 0.9, "worst_class_recall": 0.9}, right(900)),
            None,
            RegisterConfig(),
        )


def test_decision_dict_is_json_ready():
    d = decide(model(right(960)), CHAMPION, RegisterConfig(), champion_version="3").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["outcome"] == "promoted" and d["promote"] is True
    assert d["mcnemar"] == {"n": N, "b": 0, "c": 60, "p_value": d["mcnemar"]["p_value"]}
    assert [m["metric"] for m in d["minimums"]] == ["accuracy", "macro_f1", "worst_class_recall"]


def test_evaluate_labels_scores_names_against_indices():
    ev = evaluate_labels(np.array([0, 1, 1, 2]), np.array(["a", "b", "a", "c"]), ["a", "b", "c"])
    assert ev.correct.tolist() == [True, True, False, True]
    assert ev.metrics["accuracy"] == 0.75 and ev.metrics["worst_class_recall"] == 0.5
    with pytest.raises(ValueError, match="outside the test classes: x"):
        evaluate_labels(np.array([0]), np.array(["x"]), ["a", "b"])


def test_agreement_allows_one_in_a_thousand():
    ref = ["a"] * 2000
    assert agreement_problem(np.array(["b"] * 2 + ["a"] * 1998), ref) is None
    problem = agreement_problem(np.array(["b"] * 3 + ["a"] * 1997), ref)
    assert problem == "logged model disagrees with evaluate on 3 of 2000 test images"
    assert "gave 1 predictions" in str(agreement_problem(np.array(["a"]), ref))


LOCK = {
    "stages": {
        "train": {
            "deps": [
                {"path": "pipelines/train.py", "md5": "aaa"},
                {"path": "data/processed", "md5": "abc123.dir", "nfiles": 4},
            ]
        }
    }
}


def test_dvc_dep_hash_reads_the_train_stage_deps():
    assert dvc_dep_hash(LOCK, "train", "data/processed") == "abc123.dir"
    assert dvc_dep_hash(LOCK, "train", "data/processed/") == "abc123.dir"
    assert dvc_dep_hash(LOCK, "train", "data/raw") is None
    assert dvc_dep_hash(LOCK, "evaluate", "data/processed") is None
    assert dvc_dep_hash({}, "train", "data/processed") is None


def test_version_tags_are_few_and_readable():
    decision = decide(model(right(960)), CHAMPION, RegisterConfig(), champion_version="3")
    lin = lineage("run1", {"train.lr": "0.1"}, {"git_commit": "c0ffee"}, "abc.dir")
    assert lin == lineage("run1", {"train.lr": "0.1"}, {"git_commit": "c0ffee"}, "abc.dir")
    assert json.loads(lin["params"]) == {"train.lr": "0.1"}
    exports = {"onnx": {"max_abs_diff": 2e-8, "passed": True}}
    tags = version_tags(decision, {"accuracy": 0.96}, {"accuracy": 0.9}, lin, exports)
    assert tags == {
        "decision": "promoted",
        "decision_reason": decision.reason,
        "test_accuracy": "0.96",
        "compared_with": "v3 (accuracy 0.9000)",
        "lineage.git_commit": "c0ffee",
        "lineage.data_md5": "abc.dir",
        "export.passed": "true",
    }
    assert "b=0" in decision.reason and "c=60" in decision.reason  # the evidence, readable
    assert compared_version(tags) == "3" and compared_version({"gate.champion_version": "2"}) == "2"
    broken = exports | {"torchscript": {"max_abs_diff": 1.0, "passed": False}}
    failed = version_tags(decision, {"accuracy": 0.96}, None, lin, broken)
    assert (failed["export.passed"], failed["export.failed"]) == ("false", "torchscript")
    assert lineage("r", {}, {}, None)["data_md5"] == "unknown"


def test_promote_and_rollback_walk_the_stack():
    stack = after_promotion([], None, "1")
    stack = after_promotion(stack, "1", "2")
    stack = after_promotion(stack, "2", "3")
    assert stack == ["1", "2", "3"]
    target, stack = rollback_target(stack, "3", "champion")
    assert (target, stack) == ("2", ["1", "2"])
    target, stack = rollback_target(stack, "2", "champion")
    assert (target, stack) == ("1", ["1"])
    with pytest.raises(TrackingError, match="@champion \\(v1\\) has no earlier holder"):
        rollback_target(stack, "1", "champion")


def test_alias_set_outside_the_history_is_kept_below_the_new_holder():
    assert after_promotion([], "7", "8") == ["7", "8"]
    assert after_promotion(["1", "2"], "5", "6") == ["1", "2", "5", "6"]
    # moved by hand to 5: rollback returns to the last holder we recorded
    assert rollback_target(["1", "2"], "5", "champion") == ("2", ["1", "2"])


def test_history_drops_the_oldest_moves_to_fit_a_tag():
    events: list = []
    move = {"at": "2026-12-04T03:00:12+00:00", "action": "promote", "previous": None, "by": "me"}
    for i in range(200):
        events = append_event(events, move | {"version": str(i), "reason": "x" * 40})
    assert len(format_history(events)) <= 4500
    assert events[-1]["version"] == "199" and events[0]["version"] != "0"


def holder(version: str, accuracy: str, md5: str = "d1") -> VersionView:
    tags = {"test_accuracy": accuracy, "lineage.data_md5": md5}
    return VersionView("m", version, "run", "src", 0, tags=tags)


@pytest.mark.parametrize(
    ("version", "accuracy", "md5", "held", "champion", "takes"),
    [
        ("5", "0.91", "d1", None, "1", True),  # no challenger yet
        ("5", "0.91", "d1", holder("3", "0.90"), "1", True),  # better
        ("5", "0.89", "d1", holder("3", "0.90"), "1", False),  # worse: the holder stays
        ("5", "0.90", "d1", holder("3", "0.90"), "1", False),  # tie: the holder stays
        ("5", "0.80", "d2", holder("3", "0.90"), "1", True),  # holder scored on other data
        ("5", "0.80", "d1", holder("1", "0.95"), "1", True),  # holder is the champion
        ("1", "0.99", "d1", holder("3", "0.90"), "1", False),  # the champion itself
    ],
)
def test_challenger_is_the_best_candidate_that_is_not_champion(
    version, accuracy, md5, held, champion, takes
):
    tags = {"test_accuracy": accuracy, "lineage.data_md5": md5}
    assert takes_challenger(version, tags, held, champion, "accuracy") is takes


def test_alias_history_is_readable_lines_that_parse_back():
    first = {"at": "2026-12-04T03:00:12+00:00", "action": "promote", "version": "1",
             "previous": None, "by": "register stage", "forced": False,
             "reason": "passes the minimums; no current champion"}  # fmt: skip
    second = first | {"version": "2", "previous": "1", "by": "ana", "forced": True,
                      "reason": "forced: hotfix\n#12: see: ticket"}  # fmt: skip
    text = format_history([first, second])
    assert text.splitlines() == [
        "2026-12-04T03:00:12+00:00 promote v1 (was none) by register stage: "
        "passes the minimums; no current champion",
        "2026-12-04T03:00:12+00:00 promote (forced) v2 (was v1) by ana: "
        "forced: hotfix #12: see: ticket",
    ]
    assert parse_history(text) == [first, second | {"reason": "forced: hotfix #12: see: ticket"}]
    assert parse_history(json.dumps([first])) == [first]  # what older mlpipe wrote
    assert parse_history("") == [] and parse_history("not a move") == []
