"""Calibration metrics on predicted probabilities (pure numpy, no I/O)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(total)


def nll(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot label."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """Temperature T > 0 minimising NLL of softmax(logits / T); fit it on the validation split."""
    import torch

    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.exp().item())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> dict[str, list[Any]]:
    """Per confidence bin (the same equal-width bins as `ece`): its centre, mean confidence,
    accuracy and count; empty bins have None for confidence and accuracy."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out: dict[str, list[Any]] = {"centre": [], "confidence": [], "accuracy": [], "count": []}
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        out["centre"].append(float((lo + hi) / 2))
        out["count"].append(int(in_bin.sum()))
        out["confidence"].append(float(conf[in_bin].mean()) if in_bin.any() else None)
        out["accuracy"].append(float(correct[in_bin].mean()) if in_bin.any() else None)
    return out


def calibration_report(
    logits: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int = 15
) -> dict[str, float]:
    """ECE, NLL and Brier score with the fitted temperature and without it (T = 1)."""
    raw, scaled = softmax(logits), softmax(logits, temperature)
    return {
        "temperature": round(float(temperature), 4),
        "ece": round(ece(scaled, labels, n_bins), 4),
        "ece_uncalibrated": round(ece(raw, labels, n_bins), 4),
        "nll": round(nll(scaled, labels), 4),
        "nll_uncalibrated": round(nll(raw, labels), 4),
        "brier": round(brier(scaled, labels), 4),
        "brier_uncalibrated": round(brier(raw, labels), 4),
    }
