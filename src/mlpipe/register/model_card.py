"""A registered version's model card: markdown built from plain dicts, no IO."""

from __future__ import annotations

from typing import Any

from mlpipe.register.config import GATE_METRICS


def build_model_card(
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    decision: dict[str, Any],
    lineage: dict[str, Any],
    params: dict[str, Any],
    exports: dict[str, dict[str, Any]],
    champion_metrics: dict[str, Any] | None = None,
    confusion_image: str | None = None,
) -> str:
    """Markdown for one version.

    model: name, version (run_id optional); data: source, class_names, md5, splits
    ({name: count}); metrics: as evaluate.metrics.classification_metrics returns
    (accuracy, macro_f1, worst_class_recall, n, per_class); decision: Decision.to_dict();
    lineage: git_commit, data_md5, run_id; params: flat name -> value; exports:
    format -> ParityCheck.to_dict(); confusion_image: a link relative to the card.
    """
    parts = [
        f"# {model['name']} v{model['version']}",
        f"**Decision: {decision['outcome']}.** {decision['reason']}",
        _data_section(data, metrics),
        _metrics_section(metrics, decision, champion_metrics),
        _per_class_section(metrics, confusion_image),
        _insight_section(metrics, confusion_image),
        _gates_section(decision),
        _exports_section(exports),
        _params_section(params),
        _lineage_section(lineage),
    ]
    return "\n\n".join(parts) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_section(data: dict[str, Any], metrics: dict[str, Any]) -> str:
    splits = ", ".join(f"{k} {v:,}" for k, v in (data.get("splits") or {}).items())
    classes = data.get("class_names") or []
    lines = [
        "## Data",
        f"- source: {_cell(data.get('source'))}",
        f"- splits: {splits or '-'}; test metrics on {metrics.get('n', '-')} images",
        f"- {len(classes)} classes: {', '.join(map(str, classes))}",
        f"- DVC md5 of the processed data: `{_cell(data.get('md5'))}`",
    ]
    return "\n".join(lines)


def _metrics_section(
    metrics: dict[str, Any], decision: dict[str, Any], champion: dict[str, Any] | None
) -> str:
    header = ["metric", "this version"]
    if champion is not None:
        header.append(f"champion v{decision.get('champion_version')}")
    rows = []
    for key in GATE_METRICS:
        row = [key, metrics.get(key)]
        if champion is not None:
            row.append(champion.get(key))
        rows.append(row)
    return "## Test metrics\n\n" + _table(header, rows)


def _per_class_section(metrics: dict[str, Any], confusion_image: str | None) -> str:
    rows = [
        [name, row.get("precision"), row.get("recall"), row.get("f1"), row.get("support")]
        for name, row in (metrics.get("per_class") or {}).items()
    ]
    text = "### Per class\n\n" + _table(["class", "precision", "recall", "F1", "support"], rows)
    if confusion_image:
        text += f"\n\n![Confusion matrix (test)]({confusion_image})"
    return text


def _insight_section(metrics: dict[str, Any], confusion_image: str | None) -> str:
    """Calibration and error analysis, when evaluate reported them."""

    def image(name: str) -> str:  # beside the confusion matrix, linked the same way
        return (confusion_image or "").replace("confusion_matrix.png", name)

    parts = ["### Calibration and mistakes"]
    cal = metrics.get("calibration")
    if cal:
        rows = [[k, cal.get(f"{k}_uncalibrated"), cal.get(k)] for k in ("ece", "nll", "brier")]
        parts.append(
            f"Temperature scaling (T = {_cell(cal.get('temperature'))}, fitted on the "
            "validation split) is inside the served model.\n\n"
            + _table(["test metric", "uncalibrated", "served (calibrated)"], rows)
        )
        if confusion_image:
            parts.append(f"![Reliability diagram (test)]({image('reliability_diagram.png')})")
    confusions = metrics.get("top_confusions")
    if confusions:
        rows = [[r["true"], r["predicted"], r["count"], r["share"]] for r in confusions]
        parts.append(
            "Most frequent confusions (share of all mistakes):\n\n"
            + _table(["true", "predicted", "count", "share"], rows)
        )
        if confusion_image:
            parts.append(f"![Most confident mistakes (test)]({image('confident_mistakes.png')})")
    if len(parts) == 1:
        parts.append("- not reported by this version's evaluate stage")
    return "\n\n".join(parts)


def _gates_section(decision: dict[str, Any]) -> str:
    rows: list[list[Any]] = [
        [f"minimum {m['metric']}", m["required"], m["actual"], m["passed"]]
        for m in decision.get("minimums", [])
    ]
    test = decision.get("mcnemar")
    if test is not None:
        rows.append(
            [
                f"gain in {decision['metric']}",
                decision.get("min_improvement"),
                decision.get("improvement"),
                (decision.get("improvement") or 0.0) >= (decision.get("min_improvement") or 0.0),
            ]
        )
        rows.append(
            [
                "McNemar p (exact, two-sided)",
                f"< {decision.get('alpha')}",
                f"{test['p_value']:.3g} (b={test['b']}, c={test['c']}, n={test['n']})",
                test["p_value"] < decision.get("alpha", 0.05) and test["c"] > test["b"],
            ]
        )
    else:
        rows.append(["champion comparison", "-", "no champion to compare with", "-"])
    return "## Promotion gates\n\n" + _table(["gate", "required", "actual", "passed"], rows)


def _exports_section(exports: dict[str, dict[str, Any]]) -> str:
    rows = [
        [
            fmt,
            f"{check['max_abs_diff']:.2e}",
            check["predictions_match"],
            check["n_images"],
            check["passed"],
        ]
        for fmt, check in exports.items()
    ]
    header = ["format", "max abs diff", "same predictions", "images", "passed"]
    return "## Exports (checked against PyTorch)\n\n" + _table(header, rows)


def _params_section(params: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in sorted(params.items())]
    return "## Training parameters\n\n" + _table(["param", "value"], rows)


def _lineage_section(lineage: dict[str, Any]) -> str:
    lines = ["## Lineage"]
    lines += [f"- {key}: `{_cell(value)}`" for key, value in lineage.items() if key != "params"]
    return "\n".join(lines)
