"""What `mlpipe monitor` says: one line per finding, the JSON report, a PNG summary."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpipe.io import atomic_path
from mlpipe.validate.config import Severity

if TYPE_CHECKING:  # scipy and pandas: `mlpipe --help` imports Exit from here
    from mlpipe.monitor.stats import DriftResult, FamilyResult
    from mlpipe.validate.gx import ValidationReport

REPORT_JSON, SUMMARY_PNG = "monitor.json", "monitor.png"
SHOWN_COLUMNS = 3


class Exit(IntEnum):
    """`mlpipe monitor`'s exit codes, most urgent last (the highest applicable wins)."""

    ok = 0
    drift = 1  # the batch differs from the reference
    data_check_failed = 2  # an `error` check of the validate suite failed on the batch
    bad_input = 3  # unreadable batch, wrong shape or channels, empty folder, bad model URI
    no_reference = 4  # the model version has no monitoring reference
    store_unreachable = 5  # the MLflow store cannot be reached


def outcome(checks: ValidationReport | None, drift: DriftResult | None) -> Exit:
    if checks is not None and not checks.success:
        return Exit.data_check_failed
    if drift is not None and drift.drift:
        return Exit.drift
    return Exit.ok


def finding_lines(
    checks: ValidationReport | None,
    drift: DriftResult | None,
    n_images: int,
    class_names: list[str],
) -> list[str]:
    lines = []
    if checks is not None:
        lines += [f"data check failed: {x}" for x in checks.failure_lines(Severity.error)]
        lines += [f"data check warning: {x}" for x in checks.failure_lines(Severity.warn)]
    if drift is None:
        return lines
    rule = f"threshold {drift.threshold:.2g} = alpha {drift.alpha:g} / {drift.n_tests} tests"
    for family in drift.families:
        if family.drifted:
            lines.append(f"drift: {_family_line(family, class_names)} ({rule})")
    if not drift.drift:
        smallest = min(f.min_p for f in drift.families)
        lines.append(f"ok: no drift in {n_images} images: smallest p {smallest:.2g} ({rule})")
    return lines


def _family_line(family: FamilyResult, class_names: list[str]) -> str:
    hits = family.drifted
    if family.name == "classes":
        ref = np.asarray(family.extra["reference_share"])
        new = np.asarray(family.extra["batch_share"])
        top = int(np.argmax(new - ref))
        return (
            f"predicted classes: chi2 {family.statistics[0]:.1f} (dof {family.extra['dof']}), "
            f"p {family.p_values[0]:.2g}; most over-represented: {class_names[top]} "
            f"{100 * new[top]:.1f}% vs {100 * ref[top]:.1f}%"
        )
    shown = ", ".join(
        f"{family.columns[i]} (KS D {family.statistics[i]:.2f}, p {family.p_values[i]:.2g})"
        for i in hits[:SHOWN_COLUMNS]
    )
    more = f" and {len(hits) - SHOWN_COLUMNS} more" if len(hits) > SHOWN_COLUMNS else ""
    return f"{family.name}: {len(hits)} of {len(family.columns)} differ: {shown}{more}"


def build_report(
    exit_code: Exit,
    model: dict[str, Any],
    batch: dict[str, Any],
    checks: ValidationReport | None,
    drift: DriftResult | None,
    lines: list[str],
) -> dict[str, Any]:
    return {
        "outcome": exit_code.name,
        "exit_code": int(exit_code),
        "model": model,
        "batch": batch,
        "data_checks": None if checks is None else checks.to_dict(),
        "drift": None
        if drift is None
        else {
            "detected": drift.drift,
            "alpha": drift.alpha,
            "tests": drift.n_tests,
            "threshold": drift.threshold,
            "correction": "bonferroni",
            "families": {f.name: f.to_dict() for f in drift.families},
        },
        "findings": lines,
    }


def save_summary(
    path: Path,
    drift: DriftResult,
    pixel_means: tuple[np.ndarray, np.ndarray],
    class_names: list[str],
    title: str,
) -> None:
    """Three panels: every test's -log10 p against the threshold; the images' mean pixel,
    reference vs batch; the predicted-class shares, reference vs batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    start = 0
    for family in drift.families:
        p = np.maximum(np.asarray(family.p_values), 1e-300)
        x = np.arange(start, start + len(p))
        axes[0].scatter(x, -np.log10(p), s=8, label=family.name)
        start += len(p)
    axes[0].axhline(-np.log10(drift.threshold), color="red", lw=1, label="threshold")
    axes[0].set(xlabel="test", ylabel="-log10 p", title="drift tests (Bonferroni)")
    axes[0].legend(fontsize=8)
    ref, new = pixel_means
    bins = np.linspace(0, 255, 52)
    axes[1].hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
    axes[1].hist(new, bins=bins, density=True, alpha=0.5, label="batch")
    axes[1].set(xlabel="mean pixel per image", title="pixel means")
    axes[1].legend(fontsize=8)
    classes = next((f for f in drift.families if f.name == "classes"), None)
    if classes is not None:
        k = np.arange(len(class_names))
        axes[2].bar(k - 0.2, classes.extra["reference_share"], 0.4, label="reference")
        axes[2].bar(k + 0.2, classes.extra["batch_share"], 0.4, label="batch")
        axes[2].set_xticks(k, class_names, rotation=45, ha="right", fontsize=7)
        axes[2].set(ylabel="share", title="predicted classes")
        axes[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
