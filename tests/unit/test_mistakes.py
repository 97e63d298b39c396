"""Error analysis on hand-made predictions with known answers."""

from __future__ import annotations

import numpy as np

from mlpipe.evaluate.mistakes import confident_mistakes, confusions_csv, top_confusions
from mlpipe.evaluate.plots import save_mistake_gallery

NAMES = ["a", "b", "c"]
# [actual][predicted]: 5 mistakes a->b 3, c->a 1, b->c 1
MATRIX = [[10, 3, 0], [0, 8, 1], [1, 0, 9]]


def test_top_confusions_most_frequent_first_with_share_of_mistakes() -> None:
    rows = top_confusions(MATRIX, NAMES)
    assert rows[0] == {"true": "a", "predicted": "b", "count": 3, "share": 0.6}
    # ties in class order: b->c before c->a
    assert [(r["true"], r["predicted"]) for r in rows[1:]] == [("b", "c"), ("c", "a")]
    assert top_confusions(MATRIX, NAMES, k=1) == rows[:1]
    assert top_confusions([[4, 0], [0, 5]], ["x", "y"]) == []  # no mistakes, no rows


def test_confusions_csv() -> None:
    text = confusions_csv(top_confusions(MATRIX, NAMES, k=1))
    assert text == "true,predicted,count,share\na,b,3,0.6\n"


def test_confident_mistakes_per_true_class_most_confident_first() -> None:
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # 0: a right
            [0.3, 0.6, 0.1],  # 1: a -> b at 0.6
            [0.1, 0.9, 0.0],  # 2: a -> b at 0.9
            [0.0, 0.2, 0.8],  # 3: b -> c at 0.8
            [0.0, 0.0, 1.0],  # 4: c right
        ]
    )
    labels = np.array([0, 0, 0, 1, 2])
    assert confident_mistakes(probs, labels, per_class=4) == [[2, 1], [3], []]
    assert confident_mistakes(probs, labels, per_class=1) == [[2], [3], []]


def test_gallery_is_a_png(tmp_path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    probs = np.full((5, 3), 1 / 3)
    probs[:, 1] += 0.1
    path = tmp_path / "gallery.png"
    save_mistake_gallery(images, probs, [[0, 1], [], [4]], NAMES, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
