"""Champion/challenger decision."""

from __future__ import annotations

from mlpipe.registry import decide


def test_no_champion_promotes():
    decision = decide("accuracy", 0.9, None, None)
    assert decision.promote is True
    assert decision.reason == "no current champion"
    assert decision.champion is None
    assert decision.candidate == 0.9


def test_better_candidate_promotes():
    decision = decide("accuracy", 0.9123, 0.9, "3")
    assert decision.promote is True
    assert "0.9123" in decision.reason
    assert "0.9000" in decision.reason
    assert "v3" in decision.reason
    assert "beats" in decision.reason


def test_equal_candidate_keeps_champion():
    decision = decide("accuracy", 0.9, 0.9, "3")
    assert decision.promote is False
    assert decision.reason.count("0.9000") == 2
    assert "does not beat" in decision.reason


def test_worse_candidate_keeps_champion():
    decision = decide("macro_f1", 0.85, 0.875, "12")
    assert decision.promote is False
    assert "0.8500" in decision.reason
    assert "0.8750" in decision.reason
    assert "macro_f1" in decision.reason
    assert "v12" in decision.reason


def test_champion_without_metric_promotes_and_says_so():
    decision = decide("accuracy", 0.8, None, "4")
    assert decision.promote is True
    assert "v4" in decision.reason
    assert "no recorded test_accuracy" in decision.reason


def test_to_dict_round_trips_fields():
    assert decide("accuracy", 0.5, 0.6, "2").to_dict() == {
        "promote": False,
        "reason": "test accuracy 0.5000 does not beat champion v2 (0.6000)",
        "metric": "accuracy",
        "candidate": 0.5,
        "champion": 0.6,
        "champion_version": "2",
    }
