"""The served model's own code: MLflow runs this file to build the pyfunc model.

Logged as "models from code" (`logged_model.log_classifier`): MLflow copies this file
into the model and executes it at load time, so serving needs torch, numpy, pandas and
mlflow, and nothing from this repository: it imports nothing from mlpipe.

The model takes raw images, (N, C, H, W) pixel values: integers 0..255 (uint8, or any
integer array, or a float array of whole numbers; 0.5 is refused, not rounded), runs the
TorchScript artifact (normalisation is inside it) and returns one row per image: `label`
(the class name), `probability` (of that class) and `probabilities` (all classes, in
`class_names` order).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel

TORCHSCRIPT_ARTIFACT = "torchscript"
BATCH_SIZE = 256  # images per forward pass: bounds memory for large requests
PIXEL_MAX = 255
EXPECTED = f"integers 0..{PIXEL_MAX} (uint8 pixels)"


def as_images(data: Any, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Check a batch of raw images; return it as float32 (N, C, H, W).

    Raises ValueError with a message meant for the client.
    """
    if isinstance(data, pd.DataFrame):
        raise ValueError("expected a tensor of images, (N, C, H, W), not a table")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"images must be a numeric array: {exc}") from None
    expected = "(N, " + ", ".join(map(str, image_shape)) + ")"
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images must have shape {expected}, got {tuple(array.shape)}")
    if len(array) == 0:
        raise ValueError("no images: the batch is empty")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"pixel values must be {EXPECTED}, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():  # images scaled to 0..1 are the common case: refuse, do not round
            raise ValueError(f"pixel values must be {EXPECTED}, got {float(array[bad][0]):g}")
    low, high = array.min(), array.max()
    if low < 0 or high > PIXEL_MAX:
        raise ValueError(f"pixel values must be {EXPECTED}, got {low:g}..{high:g}")
    return array.astype(np.float32, copy=False)


def predict_probabilities(module: Any, images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float32 raw pixels -> (N, K) float32 probabilities, in batches."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + BATCH_SIZE]))
            out.append(module(batch).float().numpy())
    return np.concatenate(out)


def to_frame(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    index = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "label": [class_names[i] for i in index],
            "probability": probabilities[np.arange(len(index)), index].astype(np.float64),
            "probabilities": [row.astype(np.float64).tolist() for row in probabilities],
        }
    )


class ImageClassifier(PythonModel):
    """Raw images in; class names and probabilities out."""

    def load_context(self, context: Any) -> None:
        config = context.model_config
        self.class_names = list(config["class_names"])
        c, h, w = (int(d) for d in config["image_shape"])
        self.image_shape = (c, h, w)
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export but loads everywhere torch
            # does; the warning would be printed on every server start.
            warnings.simplefilter("ignore", DeprecationWarning)
            path = context.artifacts[TORCHSCRIPT_ARTIFACT]
            module = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
            self.module = module.eval()

    # np.ndarray is a hint MLflow derives no signature from. The logged signature has no
    # input schema, so the scoring server passes the request's values as they came (it
    # would cast them to a declared dtype: 0.5 to 0) and as_images checks them.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        try:
            images = as_images(model_input, self.image_shape)
        except ValueError as exc:
            # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        return to_frame(predict_probabilities(self.module, images), self.class_names)


# MLflow executes this file under a generated module name to load the model; importing
# it as part of the library must not register a model.
if __name__ != "mlpipe.tracking.serving":
    set_model(ImageClassifier())
