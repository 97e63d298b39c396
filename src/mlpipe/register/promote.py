"""The promotion decision, once, for the register stage and `mlpipe registry promote`.

Both score the champion on the same test images as the candidate and apply the gates of
`gates.decide`. They differ only in where the candidate's scores come from: the stage
reads evaluate's outputs (the test scores' one home), the CLI scores a registered version.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mlpipe.dataset import ImageSplit
from mlpipe.errors import TrackingError
from mlpipe.register.config import RegisterConfig
from mlpipe.register.gates import Decision, Evaluation, decide, evaluate_labels
from mlpipe.tracking import logged_model
from mlpipe.tracking.registry import ModelView

log = logging.getLogger(__name__)


def score_version(uri: str, test: ImageSplit, class_names: list[str]) -> Evaluation:
    """A logged or registered model's Evaluation on the test set (its pyfunc predictions)."""
    predicted = logged_model.predict_labels(uri, test.images, class_names)
    try:
        return evaluate_labels(test.labels, predicted, class_names)
    except ValueError as exc:
        raise TrackingError(f"{uri}: {exc}") from None


def score_champion(
    cfg: RegisterConfig, model: ModelView | None, test: ImageSplit, class_names: list[str]
) -> tuple[Evaluation | None, str | None, str | None]:
    """(evaluation, version, why it could not be scored) of the current champion, if any."""
    version = None if model is None else model.aliases.get(cfg.champion_alias)
    if version is None:
        return None, None, None
    try:
        return (
            score_version(f"models:/{cfg.model_name}/{version}", test, class_names),
            version,
            None,
        )
    except TrackingError as exc:
        log.warning("%s v%s could not be evaluated: %s", cfg.model_name, version, exc)
        return None, version, str(exc)


def assess(
    cfg: RegisterConfig,
    candidate: Evaluation,
    model: ModelView | None,
    test: ImageSplit,
    class_names: list[str],
    failed_checks: list[str],
    against_champion: bool = True,
) -> Decision:
    """Apply the gates: minimums and checks, then (if asked) the comparison with the
    champion that `model` (the registered model, None if there is none yet) names."""
    champion, version, error = None, None, None
    if against_champion:
        champion, version, error = score_champion(cfg, model, test, class_names)
    return decide(candidate, champion, cfg, version, error, failed_checks)


def manual_rules(cfg: RegisterConfig) -> RegisterConfig:
    """The same gates for `mlpipe registry promote`: passing them promotes."""
    return dataclasses.replace(cfg, auto_promote=True)


def correctness(predicted: list[str], test: ImageSplit, class_names: list[str]) -> np.ndarray:
    """(N,) bool from evaluate's predicted class names, in test-set order."""
    if len(predicted) != len(test):
        raise TrackingError(f"{len(predicted)} predictions for {len(test)} test images")
    truth = np.asarray(class_names, dtype=object)[test.labels].astype(str)
    correct: np.ndarray = np.asarray(predicted, dtype=str) == truth
    return correct
