"""Self-contained checkpoints: weights plus everything needed to rebuild the model."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlpipe.config import plain
from mlpipe.errors import DataError, first_line
from mlpipe.io import atomic_write_bytes
from mlpipe.models import Classifier, build_model, load_config

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path, model: nn.Module, model_cfg: Any, meta: dict[str, Any]
) -> None:
    """Write atomically; `meta` holds class_names, in_channels, image_shape, normalisation.

    The same content gives the same bytes: torch.save names the archive inside the zip
    after the file it writes to, so it writes to a buffer (archive name "archive"), not
    to the (randomly named) temporary file.
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": plain(dataclasses.asdict(model_cfg)),
        "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def model_meta(
    class_names: list[str], image_shape: tuple[int, int, int], normalization: dict[str, Any]
) -> dict[str, Any]:
    """What `load_checkpoint` needs besides the weights and the model config."""
    return {
        "class_names": list(class_names),
        "in_channels": image_shape[0],
        "image_shape": list(image_shape),
        "normalization": normalization,
    }


def load_checkpoint(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model from a checkpoint; any problem names the file."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint missing; run the train stage") from None
    except Exception as exc:  # torch raises many types for a corrupt file
        raise DataError(f"{path}: unreadable checkpoint: {first_line(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: not an mlpipe checkpoint (format {FORMAT_VERSION} expected)")
    try:
        meta = payload["meta"]
        model_cfg = load_config({"model": payload["model"]}, where=str(path))
        norm = meta["normalization"]
        model = build_model(
            model_cfg, meta["in_channels"], len(meta["class_names"]), norm["mean"], norm["std"]
        )
        model.load_state_dict(payload["state_dict"])
    except KeyError as exc:
        raise DataError(f"{path}: incomplete checkpoint: no {exc}") from None
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the model: {first_line(exc)}") from None
    return model.eval(), meta
