"""Portable exports of a trained classifier, each checked against the PyTorch model.

Both exports take float32 raw pixels (N, C, H, W), values 0..255, any batch size, and
return class probabilities (N, K): normalisation and softmax travel inside.

- TorchScript (`torch.jit.trace`): loads with `torch.jit.load` alone, no model code.
  Deprecated upstream in favour of torch.export, still the most widely loadable file.
- ONNX via the torch.export-based exporter (`dynamo=True`, torch's default since 2.9):
  the batch dimension is declared dynamic with `torch.export.Dim`. It needs `onnxscript`.
  The older TorchScript-based exporter also works here but is deprecated and warns
  that it will be removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.jit._trace import TracerWarning  # torch.jit re-exports it without __all__

TOLERANCE = 1e-4  # max absolute difference on probabilities
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
BATCH_SIZE = 256


class Probabilities(nn.Module):
    """Raw pixels (B, C, H, W) -> class probabilities (B, K)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


@dataclass
class ParityCheck:
    """How an export's outputs compare with the PyTorch model's on the same images."""

    format: str
    n_images: int
    max_abs_diff: float
    predictions_match: bool
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.predictions_match and self.max_abs_diff < self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        same = "identical" if self.predictions_match else "different"
        return (
            f"{self.format} {verdict}: max |diff| {self.max_abs_diff:.2e} "
            f"(< {self.tolerance:g} needed), {same} predictions on {self.n_images} images"
        )


def compare(
    fmt: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float = TOLERANCE
) -> ParityCheck:
    """Pure: compare (N, K) probabilities from an export with the reference's."""
    if reference.shape != candidate.shape:
        return ParityCheck(fmt, len(reference), float("inf"), False, tolerance)
    diff = float(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).max())
    same = bool((reference.argmax(axis=1) == candidate.argmax(axis=1)).all())
    return ParityCheck(fmt, len(reference), diff, same, tolerance)


def _batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    parts = [fn(images[i : i + BATCH_SIZE]) for i in range(0, len(images), BATCH_SIZE)]
    return np.concatenate(parts)


def torch_probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    wrapped = Probabilities(model).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: torch.Tensor = wrapped(torch.from_numpy(batch.astype(np.float32)))
            return out.numpy()

    return _batched(run, images)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters warn about deprecations and absent torchvision ops and print progress."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # e.g. a shape check traced as a constant; the parity check is what decides
            warnings.simplefilter("ignore", TracerWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _example(images: np.ndarray) -> torch.Tensor:
    if len(images) < 2:
        raise ValueError("the example batch needs at least 2 images (batch 1 specialises)")
    return torch.from_numpy(np.ascontiguousarray(images[:8], dtype=np.float32))


def export_torchscript(model: nn.Module, images: np.ndarray, path: str | Path) -> Path:
    """Trace model + softmax on float32 example images and save it."""
    path = Path(path)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]  # untyped in torch
            Probabilities(model).eval(), _example(images)
        )
        traced.save(str(path))
    return path


def export_onnx(model: nn.Module, images: np.ndarray, path: str | Path) -> Path:
    """Export model + softmax to one self-contained ONNX file with a dynamic batch."""
    path = Path(path)
    with _quiet():
        torch.onnx.export(
            Probabilities(model).eval(),
            (_example(images),),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    return path


def load_torchscript(path: str | Path) -> Any:
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return module.eval()


def torchscript_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    module = load_torchscript(path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: torch.Tensor = module(torch.from_numpy(batch.astype(np.float32)))
            return out.numpy()

    return _batched(run, images)


def onnx_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: batch.astype(np.float32)})[0])

    return _batched(run, images)


def export_and_check(
    model: nn.Module, images: np.ndarray, out_dir: str | Path, tolerance: float = TOLERANCE
) -> dict[str, ParityCheck]:
    """Write both exports to `out_dir` and check each against `model` on `images`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    reference = torch_probabilities(model, images)
    ts = export_torchscript(model, images, out_dir / TORCHSCRIPT_FILE)
    onnx_path = export_onnx(model, images, out_dir / ONNX_FILE)
    return {
        "torchscript": compare(
            "torchscript", reference, torchscript_probabilities(ts, images), tolerance
        ),
        "onnx": compare("onnx", reference, onnx_probabilities(onnx_path, images), tolerance),
    }
