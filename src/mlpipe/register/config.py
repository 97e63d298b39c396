"""The `register` section of params.yaml: the registered name, its aliases, the gates."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlpipe.config import check

# Test metrics (keys of reports/evaluate.json, higher is better) the promotion gates read.
GATE_METRICS = ["accuracy", "macro_f1", "worst_class_recall"]


def _default_min_metrics() -> dict[str, float]:
    return {"accuracy": 0.85, "macro_f1": 0.85, "worst_class_recall": 0.5}


@dataclass
class RegisterConfig:
    model_name: str = "mlpipe-classifier"
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    metric: str = "accuracy"  # the gain over the champion is measured on this test metric
    # below any of these the version is registered but rejected: no alias
    min_metrics: dict[str, float] = field(default_factory=_default_min_metrics)
    min_improvement: float = 0.002  # absolute gain in `metric` needed over the champion
    alpha: float = 0.05  # significance level of the exact McNemar test against the champion
    auto_promote: bool = True  # false: record the gates; `mlpipe registry promote` moves it
    parity_images: int = 512  # test images the ONNX/TorchScript exports are checked on
    export_tolerance: float = 1e-4  # max absolute difference on probabilities

    def __post_init__(self) -> None:
        check(bool(self.model_name.strip()), "model_name", "must not be empty")
        check(
            self.challenger_alias != self.champion_alias,
            "champion_alias",
            "must differ from challenger_alias",
        )
        known = ", ".join(GATE_METRICS)
        check(self.metric in GATE_METRICS, "metric", f"must be one of {known}, got {self.metric!r}")
        for key, value in self.min_metrics.items():
            check(key in GATE_METRICS, f"min_metrics.{key}", f"unknown metric (known: {known})")
            check(0.0 <= value <= 1.0, f"min_metrics.{key}", f"must be in [0, 1], got {value}")
        check(
            0.0 <= self.min_improvement < 1.0,
            "min_improvement",
            f"must be in [0, 1), got {self.min_improvement}",
        )
        check(0.0 < self.alpha < 1.0, "alpha", f"must be in (0, 1), got {self.alpha}")
        check(self.parity_images >= 2, "parity_images", f"must be >= 2, got {self.parity_images}")
        check(
            0.0 < self.export_tolerance < 1.0,
            "export_tolerance",
            f"must be in (0, 1), got {self.export_tolerance}",
        )
