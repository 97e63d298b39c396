"""make bench-data's measuring parts: the process-tree PSS and the budget ratios."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.train import SECTIONS as TRAIN_SECTIONS

from mlpipe.config import load_sections
from mlpipe.ingest.bench import budgets, make_image, tree_pss_kb, write_params


def test_tree_pss_counts_this_process() -> None:
    assert tree_pss_kb(os.getpid()) > 1000  # a Python process with numpy: megabytes


def test_budgets_are_ratios_of_the_largest_size_over_the_smallest() -> None:
    def size(pss: float, ratio: float) -> dict:
        stage = {"wall_s": 1.0, "max_rss_mb": pss, "tree_pss_mb": pss}
        return {"stages": {"ingest": stage, "validate": stage}, "ingest_vs_bare": ratio}

    out = budgets([size(400.0, 0.9), size(480.0, 0.85)])
    assert out["ingest.tree_pss_mb.growth"] == 1.2 and out["ok_growth"] is True
    assert out["peak_tree_pss_gb"] == round(480 / 1024, 3) and out["ok_peak"] is True
    assert out["ok_ingest_throughput"] is True
    worse = budgets([size(400.0, 0.9), size(1600.0, 0.7)])
    assert not (worse["ok_growth"] or worse["ok_peak"] or worse["ok_ingest_throughput"])


def test_generated_images_are_rgb_96_and_differ() -> None:
    a, b = make_image(0), make_image(1)
    assert a.shape == (96, 96, 3) and a.dtype.name == "uint8" and not (a == b).all()


def test_auto_training_and_the_manifest_are_reported_but_not_budgeted() -> None:
    def size(big: float) -> dict:
        def stage(pss: float) -> dict:
            return {"wall_s": 1.0, "max_rss_mb": pss, "tree_pss_mb": pss}

        stages = {"manifest": stage(big), "train": stage(700.0), "train_auto": stage(big)}
        return {"stages": stages, "ingest_vs_bare": 0.9}

    out = budgets([size(100.0), size(2000.0)])
    assert out["train_auto.tree_pss_mb.growth"] == 20.0  # reported
    assert out["peak_stage"] == "train" and out["ok_peak"] and out["ok_growth"]


def test_stage_params_train_one_smoke_sized_epoch_streamed_and_auto(tmp_path: Path) -> None:
    files = write_params(tmp_path, tmp_path / "images", workers=2)
    assert set(files) == {"false", "auto"}
    for choice, path in files.items():
        cfg = load_sections(Path(path), TRAIN_SECTIONS)  # what the train stage accepts
        train = cfg["train"]
        assert (train.epochs, train.batch_size, str(train.in_memory)) == (1, 64, choice)
        assert cfg["model"].stem_stride == 2
