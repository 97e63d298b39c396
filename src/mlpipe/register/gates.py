"""Promotion gates: pure, so they are tested without a registry.

A candidate is
- `rejected` when it misses a minimum test metric or a check (export parity, agreement of
  the logged model with the evaluation). It is still registered, for the record, but gets
  no alias.
- `promoted` when it passes the minimums and, against the champion on the same test
  images, gains at least `min_improvement` in `metric` with an exact McNemar p < alpha
  (or when there is no champion), and `auto_promote` is on.
- `challenger` otherwise: champion unchanged; the version takes the `challenger` alias if it
  is the best such candidate (`aliases.takes_challenger`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from mlpipe.evaluate.metrics import classification_metrics
from mlpipe.evaluate.stats import McNemar, mcnemar_exact
from mlpipe.register.config import GATE_METRICS, RegisterConfig


class Outcome(str, Enum):
    promoted = "promoted"
    challenger = "challenger"
    rejected = "rejected"


@dataclass
class Evaluation:
    """One model on the test set: its metrics and which images it got right."""

    metrics: dict[str, Any]  # classification_metrics(): accuracy, macro_f1, per_class, ...
    correct: np.ndarray  # (N,) bool, in test-set order


@dataclass
class MinimumCheck:
    metric: str
    required: float
    actual: float

    @property
    def passed(self) -> bool:
        return self.actual >= self.required

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class Decision:
    outcome: Outcome
    eligible: bool  # passed every gate (promoted now, or by `mlpipe registry promote`)
    reason: str
    metric: str
    candidate: float  # the candidate's test `metric`
    champion: float | None = None
    champion_version: str | None = None
    improvement: float | None = None
    minimums: list[MinimumCheck] = field(default_factory=list)
    mcnemar: McNemar | None = None
    alpha: float = 0.05
    min_improvement: float = 0.0
    champion_scores: dict[str, Any] | None = None  # the champion's test metrics, if compared

    @property
    def promote(self) -> bool:
        return self.outcome is Outcome.promoted

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "promote": self.promote,
            "eligible": self.eligible,
            "reason": self.reason,
            "metric": self.metric,
            "candidate": self.candidate,
            "champion": self.champion,
            "champion_version": self.champion_version,
            "improvement": self.improvement,
            "min_improvement": self.min_improvement,
            "alpha": self.alpha,
            "minimums": [m.to_dict() for m in self.minimums],
            "mcnemar": self.mcnemar.to_dict() if self.mcnemar else None,
        }


def check_minimums(metrics: dict[str, float], required: dict[str, float]) -> list[MinimumCheck]:
    missing = sorted(set(required) - set(metrics))
    if missing:
        raise ValueError(f"metrics lack {', '.join(missing)}: cannot check the minimums")
    return [MinimumCheck(k, float(v), float(metrics[k])) for k, v in required.items()]


def decide(
    candidate: Evaluation,
    champion: Evaluation | None,
    cfg: RegisterConfig,
    champion_version: str | None = None,
    champion_error: str | None = None,
    failed_checks: list[str] | None = None,
) -> Decision:
    """Apply the gates in order: minimums and checks, then the comparison with the champion.

    `champion_error` says why an existing champion could not be evaluated: then nothing
    is promoted automatically.
    """
    minimums = check_minimums(candidate.metrics, cfg.min_metrics)
    base = Decision(
        outcome=Outcome.rejected,
        eligible=False,
        reason="",
        metric=cfg.metric,
        candidate=float(candidate.metrics[cfg.metric]),
        champion_version=champion_version,
        minimums=minimums,
        alpha=cfg.alpha,
        min_improvement=cfg.min_improvement,
    )
    problems = [
        f"{m.metric} {m.actual:.4f} < minimum {m.required:.4f}" for m in minimums if not m.passed
    ] + list(failed_checks or [])
    if problems:
        base.reason = "rejected: " + "; ".join(problems)
        return base
    if champion is None:
        if champion_error:
            base.outcome = Outcome.challenger
            base.reason = f"champion v{champion_version} could not be evaluated: {champion_error}"
            return base
        return _eligible(base, "passes the minimums; no current champion", cfg.auto_promote)
    return _compare(base, candidate, champion, cfg)


def _compare(
    base: Decision, candidate: Evaluation, champion: Evaluation, cfg: RegisterConfig
) -> Decision:
    test = mcnemar_exact(champion.correct, candidate.correct)
    base.mcnemar = test
    base.champion_scores = champion.metrics
    base.champion = float(champion.metrics[cfg.metric])
    base.improvement = round(base.candidate - base.champion, 6)
    evidence = (
        f"{cfg.metric} {base.candidate:.4f} vs champion v{base.champion_version} "
        f"{base.champion:.4f} ({base.improvement:+.4f}); McNemar b={test.b} c={test.c} "
        f"p={test.p_value:.3g}"
    )
    if test.significant(cfg.alpha) and not test.candidate_better:
        base.outcome, base.reason = Outcome.challenger, f"significantly worse: {evidence}"
    elif base.improvement < cfg.min_improvement:
        base.outcome = Outcome.challenger
        base.reason = f"gain below {cfg.min_improvement:g}: {evidence}"
    elif not (test.significant(cfg.alpha) and test.candidate_better):
        base.outcome = Outcome.challenger
        base.reason = f"not significant at alpha {cfg.alpha:g}: {evidence}"
    else:
        return _eligible(base, f"significantly better: {evidence}", cfg.auto_promote)
    return base


def _eligible(base: Decision, reason: str, auto_promote: bool) -> Decision:
    base.eligible = True
    if auto_promote:
        base.outcome, base.reason = Outcome.promoted, reason
    else:
        base.outcome = Outcome.challenger
        base.reason = f"{reason}; auto_promote is off: promote with `mlpipe registry promote`"
    return base


def evaluate_labels(
    y_true: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> Evaluation:
    """An Evaluation from true class indices and predicted class names."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(p) for p in predicted} - set(index))
    if unknown:
        raise ValueError(f"predicts labels outside the test classes: {', '.join(unknown[:5])}")
    y_pred = np.array([index[str(p)] for p in predicted], dtype=np.int64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} test images")
    return Evaluation(classification_metrics(y_true, y_pred, class_names), y_pred == y_true)


def agreement_problem(predicted: np.ndarray, reference: list[str]) -> str | None:
    """Why the logged model's labels and evaluate's disagree too much, or None.

    Up to 0.1 % (at least one image) may differ: TorchScript and eager PyTorch can round
    differently on a near-tie.
    """
    if len(predicted) != len(reference):
        return f"logged model gave {len(predicted)} predictions, evaluate {len(reference)}"
    differ = int(np.count_nonzero(np.asarray(predicted, dtype=str) != np.asarray(reference)))
    allowed = max(1, len(reference) // 1000)
    if differ > allowed:
        return f"logged model disagrees with evaluate on {differ} of {len(reference)} test images"
    return None


def summary_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = [*GATE_METRICS, "n"]
    return {k: metrics[k] for k in keys if k in metrics}
