"""The reference a model version is watched against, built once when it is registered.

A folder (logged on the version's run under `monitor/`, copied to models/monitor/):

- `reference.npz`: a sample of held-out training images' pixel features (M, P), their
  penultimate-layer embeddings (M, D) and the classes the model predicts for them (M,);
- `reference.json`: class names, image shape, where the sample came from, format;
- `probe.torchscript.pt`: the model traced to return (embedding, logits) for raw pixels,
  so `mlpipe monitor` needs neither this repository's model code nor the served pyfunc to
  compute embeddings, and measures exactly the weights that were registered.

The sample comes from the validation split (a stratified part of the training data that
the model was not fitted on) when there is one: the embeddings of images a model has fitted
closely are tighter than those of new images, and a reference made of them would flag
in-distribution batches. (A precaution: with the bench's one-epoch CNN a reference of its own
training images gives the same false-alarm rate, `bench --reference-from fitted`.) Without a
validation split it falls back to the train split.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlpipe.dataset import ImageDataset, ShardedDataset
from mlpipe.errors import DataError
from mlpipe.io import atomic_dir
from mlpipe.models import inference_batch
from mlpipe.monitor.stats import PIXEL_FEATURES, pixel_features
from mlpipe.shards import ShardedSplit

FORMAT = 1
ARRAYS, META, PROBE = "reference.npz", "reference.json", "probe.torchscript.pt"
FILES = [ARRAYS, META, PROBE]
MAX_SAMPLE = 5000  # reference images: more only sharpens the reference side of each test
BATCH = 512
SPLITS = ["val", "train"]  # the first one present is sampled


@dataclass
class Reference:
    pixels: np.ndarray  # (M, P) float64, PIXEL_FEATURES
    embeddings: np.ndarray  # (M, D) float32
    predicted: np.ndarray  # (M,) int64 class indices
    class_names: list[str]
    image_shape: list[int]  # [C, H, W]
    split: str  # which split was sampled
    split_size: int
    probe: torch.jit.ScriptModule | None = None

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.predicted, minlength=len(self.class_names))

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "class_names": self.class_names,
            "image_shape": self.image_shape,
            "split": self.split,
            "split_size": self.split_size,
            "sample_size": len(self.pixels),
            "pixel_features": PIXEL_FEATURES,
            "embedding_dim": int(self.embeddings.shape[1]),
        }


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's final Linear layer: its input is the penultimate-layer embedding."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DataError(f"{type(model).__name__} has no Linear layer to take embeddings from")
    return linears[-1]


class Probe(nn.Module):
    """Raw pixels (B, C, H, W) -> (embedding (B, D), logits (B, K))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = last_linear(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list[torch.Tensor] = []
        hook = self.head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        return seen[-1].flatten(1), logits


def trace_probe(model: nn.Module, example: np.ndarray) -> torch.jit.ScriptModule:
    """A CPU TorchScript trace of `Probe(model)`, in eval mode; any batch size."""
    import copy

    probe = Probe(copy.deepcopy(model).cpu().eval()).eval()
    x = torch.as_tensor(np.asarray(example[:2], dtype=np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the shape checks are constants
        traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
            probe, x, check_trace=False
        )
    return traced


@torch.no_grad()
def embed(probe: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) raw pixels -> (embeddings (N, D) float32, predicted classes (N,))."""
    embs, preds = [], []
    step = min(BATCH, inference_batch(images.shape[1:]))  # 512 at 28x28, 75 at 96x96 RGB
    for start in range(0, len(images), step):
        x = torch.as_tensor(np.asarray(images[start : start + step], dtype=np.float32))
        emb, logits = probe(x)
        embs.append(emb.float().numpy())
        preds.append(logits.argmax(dim=1).numpy())
    if not embs:
        raise DataError("no images to embed")
    return np.concatenate(embs), np.concatenate(preds).astype(np.int64)


def build_reference(
    model: nn.Module,
    dataset: ImageDataset | ShardedDataset,
    max_sample: int = MAX_SAMPLE,
    seed: int = 0,
) -> Reference:
    """Sample the held-out training images (see the module doc) and describe them. From a
    sharded dataset only the sampled images are read (the same sample as in memory)."""
    split = next((s for s in SPLITS if s in dataset.splits), None)
    if split is None:
        raise DataError(f"no {' or '.join(SPLITS)} split to build the monitoring reference from")
    source = dataset.splits[split]
    n = len(source)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(max_sample, n), replace=False))
    if isinstance(source, ShardedSplit):
        for number in np.unique(source.shard[pick]).tolist():
            source.read(number, verify=True)  # a changed shard stops here, named
        sample, shape = source.read_rows(pick), source.image_shape
    else:
        sample, shape = source.images[pick], source.images.shape[1:]
    probe = trace_probe(model, sample)
    embeddings, predicted = embed(probe, sample)
    return Reference(
        pixel_features(sample), embeddings, predicted, list(dataset.class_names),
        [int(d) for d in shape], split, n, probe,
    )  # fmt: skip


def save_reference(ref: Reference, folder: str | Path) -> None:
    """Write the folder atomically (it replaces any previous one whole)."""
    if ref.probe is None:
        raise ValueError("a reference without its probe cannot be saved")
    with atomic_dir(folder) as tmp:
        np.savez(
            tmp / ARRAYS, pixels=ref.pixels, embeddings=ref.embeddings, predicted=ref.predicted
        )
        (tmp / META).write_text(json.dumps(ref.meta(), indent=2) + "\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(ref.probe, str(tmp / PROBE))


def load_reference(folder: str | Path) -> Reference:
    """Read a reference folder; a missing or unreadable one raises `NoReference`."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise NoReference(f"{folder}: no monitoring reference ({', '.join(missing)} missing)")
    try:
        meta = json.loads((folder / META).read_text())
        with np.load(folder / ARRAYS) as npz:
            arrays = {k: npz[k] for k in ("pixels", "embeddings", "predicted")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: still loads
            probe = torch.jit.load(str(folder / PROBE), map_location="cpu")  # type: ignore[no-untyped-call]
        probe.eval()
    except Exception as exc:  # json, numpy and torch raise many types for a bad file
        raise NoReference(f"{folder}: unreadable monitoring reference: {exc}") from None
    if meta.get("format") != FORMAT:
        raise NoReference(f"{folder}: reference format {meta.get('format')}, {FORMAT} expected")
    return Reference(
        arrays["pixels"], arrays["embeddings"], arrays["predicted"], list(meta["class_names"]),
        list(meta["image_shape"]), str(meta["split"]), int(meta["split_size"]), probe,
    )  # fmt: skip


class NoReference(DataError):
    """The model version has no (readable) monitoring reference."""
