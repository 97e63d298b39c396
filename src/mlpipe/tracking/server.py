"""`mlpipe serve`: a registered model behind MLflow's own scoring server, guarded.

The app is MLflow's (`mlflow.pyfunc.scoring_server.init`, what `mlflow models serve
--env-manager local` runs: the model loads in this environment), wrapped by
`guard.RequestGuard`, which checks Content-Type, size and values before MLflow parses
anything. One uvicorn process, on the loopback interface unless `host` says otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from mlpipe.errors import TrackingError, redact
from mlpipe.tracking import store
from mlpipe.tracking.capture import RequestSampler
from mlpipe.tracking.guard import MAX_BATCH, RequestGuard, RequestLimits

log = logging.getLogger(__name__)


def image_shape(model: Any) -> tuple[int, int, int]:
    """(C, H, W) the model takes: our pyfunc's config, else an older model's tensor signature."""
    config = getattr(model, "model_config", None) or {}
    shape = config.get("image_shape")
    if shape is None:
        schema = model.metadata.get_input_schema()
        if schema is not None and schema.is_tensor_spec() and len(schema.inputs[0].shape) == 4:
            shape = schema.inputs[0].shape[1:]
    if shape is None or len(shape) != 3 or min(int(d) for d in shape) < 1:
        raise TrackingError("the model declares no image shape (C, H, W): not an mlpipe model?")
    c, h, w = (int(d) for d in shape)
    return c, h, w


def build_app(
    model_uri: str, max_batch: int = MAX_BATCH, sampler: RequestSampler | None = None
) -> RequestGuard:
    """Load `model_uri` from the store; MLflow's scoring app for it behind the guard."""
    from mlflow.pyfunc import scoring_server

    store.connect()
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise TrackingError(f"loading {model_uri}: {redact(exc.message)}") from None
    limits = RequestLimits(image_shape(model), max_batch)
    log.info(
        "serving %s: images %s, at most %d per request, %d bytes per body",
        model_uri, limits.shape_text, limits.max_batch, limits.max_bytes,
    )  # fmt: skip
    if sampler is not None:
        log.info(
            "keeping %.0f%% of answered requests in %s (at most %d images)",
            100 * sampler.rate, sampler.folder, sampler.max_images,
        )  # fmt: skip
    return RequestGuard(scoring_server.init(model), limits, sampler=sampler)


def serve(
    model_uri: str,
    host: str,
    port: int,
    max_batch: int = MAX_BATCH,
    sampler: RequestSampler | None = None,
) -> None:
    """Serve until interrupted."""
    import uvicorn

    app = build_app(model_uri, max_batch, sampler)
    uvicorn.run(app, host=host, port=port, log_level="info")
