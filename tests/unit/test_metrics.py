"""Classification metrics on hand-made predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipe.dataset import MAX_CLASS_NAME_LENGTH, class_key, class_name_problem
from mlpipe.evaluate.metrics import classification_metrics, flat_metrics

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


def test_flat_metrics_keys_are_sanitised(metrics):
    flat = flat_metrics(metrics)
    assert flat["test_accuracy"] == 0.7
    assert flat["test_recall_T-shirt_top"] == 0.75
    assert flat["test_precision_Ankle_boot"] == 1.0
    assert flat["test_f1_Trouser"] == metrics["per_class"]["Trouser"]["f1"]
    assert len(flat) == 3 + 3 * len(CLASSES)
    assert not any("/" in key or " " in key for key in flat)
    assert all(isinstance(v, float) for v in flat.values())


def test_flat_metrics_prefix(metrics):
    flat = flat_metrics(metrics, prefix="val_")
    assert "val_macro_f1" in flat
    assert not any(key.startswith("test_") for key in flat)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("T-shirt/top", "T-shirt_top"),
        ("Ankle boot", "Ankle_boot"),
        ("a.b-c_d", "a.b-c_d"),
        ("//", "class"),
        ("chat noir: 猫", "chat_noir_猫"),
    ],
)
def test_class_key(name, key):
    assert class_key(name) == key


NAMES_INGEST_ACCEPTS = [
    "x" * MAX_CLASS_NAME_LENGTH,
    "é" * MAX_CLASS_NAME_LENGTH,
    "T-shirt/top",
    "../..",
    "a:b c+d",
    "/",
    ".",
    "猫",
    "犬",
]


def test_every_class_name_ingest_accepts_gives_keys_mlflow_accepts():
    """Ingest's check (mlpipe.dataset) matches what evaluate logs and MLflow's own rules."""
    from mlflow.utils.validation import _validate_metric, _validate_metric_name

    assert class_name_problem(NAMES_INGEST_ACCEPTS) is None
    labels = np.arange(len(NAMES_INGEST_ACCEPTS))
    flat = flat_metrics(classification_metrics(labels, labels, NAMES_INGEST_ACCEPTS))
    assert len(flat) == 3 + 3 * len(NAMES_INGEST_ACCEPTS)  # no two classes share a key
    for key, value in flat.items():
        _validate_metric_name(key)
        _validate_metric(key, value, 0, 0)  # its length too
    longest = max(flat, key=len)
    assert len(longest) == 250 and longest.startswith("test_precision_")


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["x" * (MAX_CLASS_NAME_LENGTH + 1)], "is 236 characters long, at most 235 fit"),
        (["a\nb"], "has a control character"),
        (
            ["cat dog", "cat+dog"],
            "gives the same MLflow metric key as 'cat dog' (test_recall_cat_dog",
        ),
        (["a/b", "a_b"], "gives the same MLflow metric key as 'a/b'"),
    ],
)
def test_class_names_later_stages_cannot_use(names, problem):
    bad = class_name_problem(names)
    assert bad is not None and bad[0] == names[-1]
    assert bad[1].startswith(problem)
