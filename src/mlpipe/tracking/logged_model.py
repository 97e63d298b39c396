"""The served model: logged as a pyfunc over TorchScript, loaded back for predictions."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError
from mlpipe.tracking import store
from mlpipe.tracking.serving import TORCHSCRIPT_ARTIFACT

SERVING_CODE = Path(__file__).with_name("serving.py")
PREDICT_BATCH = 1000


def log_classifier(
    model: Any,
    class_names: list[str],
    input_example: np.ndarray,
    metadata: dict[str, Any] | None = None,
    name: str = "model",
    temperature: float = 1.0,
) -> str:
    """Log `model` (raw pixels -> logits) as a pyfunc that serves without this repository.

    The pyfunc (serving.py, logged as code) runs a TorchScript copy of model + softmax:
    raw images (N, C, H, W) of integers 0..255 in; `label`, `probability`, `probabilities`
    out.
    `input_example`: a few raw training images, (N >= 2, C, H, W). `temperature`: the
    validation-fitted temperature, divided into the logits inside the TorchScript file, so
    the served probabilities are the calibrated ones. Returns the model URI.
    """
    import torch

    from mlpipe.models.common import TemperatureScaled
    from mlpipe.models.export import TORCHSCRIPT_FILE, export_torchscript

    example = np.ascontiguousarray(input_example).astype(np.uint8)
    image_shape = [int(d) for d in example.shape[1:]]
    shape_text = f"(N, {', '.join(map(str, image_shape))})"
    with tempfile.TemporaryDirectory() as tmp:
        cpu_copy = copy.deepcopy(model).cpu().eval()  # the caller's model stays where it is
        cpu_copy = TemperatureScaled(cpu_copy, temperature).eval()
        script = export_torchscript(cpu_copy, example, Path(tmp) / TORCHSCRIPT_FILE)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(SERVING_CODE),
            artifacts={TORCHSCRIPT_ARTIFACT: str(script)},
            model_config={"class_names": list(class_names), "image_shape": image_shape},
            signature=_classifier_signature(image_shape),
            input_example=example[:2],
            pip_requirements=_serving_requirements(torch.__version__),
            metadata={
                "class_names": list(class_names),
                "input": f"raw pixels: integers 0..255 (uint8), shape {shape_text}",
                "output": "label, probability, probabilities (in class_names order)",
                "temperature": float(temperature),
                **(metadata or {}),
            },
        )
    return str(info.model_uri)


def _classifier_signature(image_shape: list[int]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    # No input schema: MLflow would cast every request to its dtype before the model sees
    # it (floats 0..1 to uint8 0, status 200) and refuse other integer arrays offline. The
    # pyfunc checks its input itself (serving.as_images); `metadata["input"]` describes it.
    return ModelSignature(
        inputs=None,
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("double", "probability"),
                ColSpec(Array("double"), "probabilities"),
            ]
        ),
    )


def _serving_requirements(torch_version: str) -> list[str]:
    """Pinned, so the model's environment is explicit (and inference of it is skipped).
    mlflow-skinny, not mlflow: it loads and serves a pyfunc (FastAPI scoring server
    included) without the tracking server, UI and their dependencies."""
    import pandas

    return [
        f"mlflow-skinny=={mlflow.__version__}",
        f"torch=={torch_version.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pandas=={pandas.__version__}",
    ]


def predict_labels(model_uri: str, images: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Class names a logged model predicts for raw images, (N,) str.

    Reads both our pyfunc (a `label` column) and older models that return logits
    (argmax over `class_names`), casting the images to the dtype the signature wants.
    """
    store.connect()
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise TrackingError(f"loading {model_uri}: {exc.message}") from None
    schema = model.metadata.get_input_schema()
    tensor = schema is not None and schema.is_tensor_spec()
    dtype = schema.numpy_types()[0] if tensor else None
    parts = []
    for start in range(0, len(images), PREDICT_BATCH):
        batch = images[start : start + PREDICT_BATCH]
        out = model.predict(batch.astype(dtype) if dtype is not None else batch)
        if hasattr(out, "columns") and "label" in out.columns:
            parts.append(out["label"].astype(str).to_numpy())
        else:
            index = np.asarray(out).argmax(axis=1)
            parts.append(np.asarray(class_names, dtype=object)[index].astype(str))
    return np.concatenate(parts)
