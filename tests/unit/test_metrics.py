"""Classification metrics on hand-made predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.dataset import class_name_problem
from mlpipe.evaluate.metrics import classification_metrics, flat_metrics, per_class_table

CLASSES = ["T-shirt/top", "Trouser", "Ankle boot"]
# actual:    0  0  0  0  1  1  1  2  2  2
# predicted: 0  0  0  1  1  1  0  2  2  1
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 0, 2, 2, 1])


@pytest.fixture(scope="module")
def metrics():
    return classification_metrics(Y_TRUE, Y_PRED, CLASSES)


def test_accuracy_and_count(metrics):
    assert metrics["accuracy"] == 0.7
    assert metrics["n"] == 10


def test_per_class(metrics):
    per = metrics["per_class"]
    assert list(per) == CLASSES
    # class 0: 3 of 4 found; predicted 0 four times, 3 right
    assert per["T-shirt/top"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    # class 1: 2 of 3 found; predicted 1 four times, 2 right
    assert per["Trouser"]["precision"] == 0.5
    assert per["Trouser"]["recall"] == round(2 / 3, 4)
    assert per["Trouser"]["support"] == 3
    # class 2: 2 of 3 found; predicted 2 twice, both right
    assert per["Ankle boot"]["precision"] == 1.0
    assert per["Ankle boot"]["recall"] == round(2 / 3, 4)
    assert per["Ankle boot"]["f1"] == 0.8


def test_macro_f1_and_worst_recall(metrics):
    f1_trouser = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    assert metrics["macro_f1"] == pytest.approx((0.75 + f1_trouser + 0.8) / 3, abs=1e-4)
    assert metrics["worst_class_recall"] == round(2 / 3, 4)


def test_confusion_matrix_is_actual_by_predicted(metrics):
    cm = metrics["confusion_matrix"]
    assert cm == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    assert cm[2][1] == 1  # one actual "Ankle boot" predicted as "Trouser" ...
    assert cm[1][2] == 0  # ... and never the other way round
    assert [sum(row) for row in cm] == [4, 3, 3]  # rows sum to the support


def test_class_never_predicted_has_precision_zero():
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1])
    metrics = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["worst_class_recall"] == 0.0
    assert metrics["confusion_matrix"][2] == [0, 2, 0]


def test_classes_absent_from_data_keep_their_row():
    metrics = classification_metrics(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert metrics["confusion_matrix"] == [[2, 0], [0, 0]]
    assert metrics["per_class"]["b"]["support"] == 0


def test_run_metrics_are_the_headline_and_per_class_figures_one_table(metrics):
    flat = flat_metrics(metrics)
    assert flat == {
        "test/accuracy": 0.7,
        "test/macro_f1": metrics["macro_f1"],
        "test/worst_class_recall": metrics["worst_class_recall"],
    }
    table = per_class_table(metrics)
    assert table["class"] == CLASSES
    assert table["recall"] == [metrics["per_class"][c]["recall"] for c in CLASSES]
    assert table["recall"][0] == 0.75
    assert table["support"] == [4, 3, 3]
    assert set(table) == {"class", "precision", "recall", "f1", "support"}


def test_class_names_with_control_characters_are_refused():
    assert class_name_problem(["x" * 300, "T-shirt/top", "cat dog", "cat+dog", "猫"]) is None
    assert class_name_problem(["ok", "a\nb"]) == ("a\nb", "has a control character")
