"""Training and validation batches streamed from a split's shards, with bounded memory.

The batches are those of the in-memory path (mlpipe.train.batches): the same epoch order
(`epoch_order`: drawn from the loop's generator, shuffled within windows of
`train.shuffle_buffer` consecutive positions when the split is larger), the same
augmentation drawn after it, and the same global batches split between ranks
(`shard_batches`). So for one seed a streamed run and an in-memory run train on the same
batches and learn the same weights. Batch k is read by DataLoader worker k mod W, and the
DataLoader hands batches back in worker order, so the batches do not depend on the number
of workers either. A worker reads a batch's rows from the shards by position (no memory
maps: touched pages of a map would count in the worker's memory until the end), a shard
at a time, into one uint8 array: memory stays at a few batches per worker whatever the
size of the split. Resuming at step k regenerates the same order and starts at batch k.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mlpipe.shards import RowFile, ShardedSplit
from mlpipe.train import augment
from mlpipe.train.augment import AugmentParams
from mlpipe.train.batches import Span, epoch_order, images_per_epoch, shard_batches
from mlpipe.train.config import AugmentConfig
from mlpipe.train.distributed import DistContext

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, C, H, W) uint8, (B,) int64
PREFETCH = 4  # batches each worker reads ahead


def read_rows(split: ShardedSplit, positions: np.ndarray, files: dict[int, RowFile]) -> Batch:
    """The images at `positions` (in that order) and their labels, as tensors."""
    images = split.read_rows(positions, files)
    labels = np.asarray(split.labels[positions], dtype=np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


class BatchReader(IterableDataset[Batch]):
    """The rows `order[span.start:span.stop]` of spans `first`, `first + 1`, ...; in a
    DataLoader, worker w of W reads spans first + w, first + w + W, ..."""

    def __init__(
        self, split: ShardedSplit, order: np.ndarray, spans: list[Span], first: int = 0
    ) -> None:
        self.split, self.order, self.spans, self.first = split, order, spans, first

    def __len__(self) -> int:
        return max(0, len(self.spans) - self.first)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        files: dict[int, RowFile] = {}  # open shards, read by position
        try:
            for k in range(self.first + worker, len(self.spans), workers):
                span = self.spans[k]
                yield read_rows(self.split, self.order[span.start : span.stop], files)
        finally:
            for file in files.values():
                file.close()


@dataclass
class StreamEpoch:
    """One epoch of training batches on the device; iterates (x, y, loss_scale)."""

    loader: DataLoader[Batch]
    augment: AugmentParams | None
    spans: list[Span]
    first: int
    device: torch.device
    memory_format: torch.memory_format

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        for span, (x, y) in zip(self.spans[self.first :], self.loader, strict=True):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment.apply(x, span.start, span.stop)
            yield x.contiguous(memory_format=self.memory_format), y, span.loss_scale


@dataclass
class StreamSplit:
    """A ShardedSplit as `fit` takes it (see engine.DataSource), streamed from disk."""

    split: ShardedSplit
    shuffle_buffer: int | None = None  # train.shuffle_buffer (batches.epoch_order)
    workers: int | None = None  # None: 0 on the CPU, 4 on CUDA
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.split)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.split.image_shape)

    def digest(self) -> str:
        """The split's identity for resume checks: index and shard hashes, no pixels."""
        h = hashlib.blake2b(b"stream", digest_size=16)
        for column in (self.split.labels, self.split.shard, self.split.offset):
            h.update(np.ascontiguousarray(column).tobytes())
        for shard in self.split.shards:
            h.update(f"{shard.count}:{shard.sha256}".encode())
        return "stream-" + h.hexdigest()

    def to(self, device: torch.device) -> StreamSplit:
        self.device = device
        return self

    def train_steps(self, batch_size: int, ctx: DistContext) -> int:
        return len(shard_batches(len(self), batch_size, 0, ctx.world_size))

    def train_images(self, batch_size: int, ctx: DistContext) -> int:
        return images_per_epoch(len(self), batch_size, ctx.world_size)

    def train_epoch(
        self,
        generator: torch.Generator,
        epoch: int,
        batch_size: int,
        augment_cfg: AugmentConfig,
        ctx: DistContext,
        memory_format: torch.memory_format = torch.contiguous_format,
        first_step: int = 0,
    ) -> StreamEpoch:
        """The order and augmentation drawn from `generator` as in memory (plan_epoch)."""
        n = len(self)
        order = epoch_order(generator, n, self.shuffle_buffer).numpy()
        params = None
        if augment.is_enabled(augment_cfg):
            params = augment.draw_params(generator, n, augment_cfg).to(self.device)
        spans = shard_batches(n, batch_size, ctx.rank, ctx.world_size)
        loader = self._loader(BatchReader(self.split, order, spans, first_step))
        return StreamEpoch(loader, params, spans, first_step, self.device, memory_format)

    def ordered(self, batch_size: int, ctx: DistContext) -> Iterator[Batch]:
        """This rank's contiguous share of the split, in split order, on the device."""
        n = len(self)
        base, extra = divmod(n, ctx.world_size)
        lo = ctx.rank * base + min(ctx.rank, extra)
        hi = lo + base + (1 if ctx.rank < extra else 0)
        spans = [Span(k, min(k + batch_size, hi), 1.0) for k in range(lo, hi, batch_size)]
        reader = BatchReader(self.split, np.arange(hi), spans)
        for x, y in self._loader(reader):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def head(self, n: int) -> np.ndarray:
        """The first `n` images, (n, C, H, W) uint8 (e.g. a logged model's input example)."""
        return read_rows(self.split, np.arange(min(n, len(self))), {})[0].numpy()

    def _loader(self, reader: BatchReader) -> DataLoader[Batch]:
        workers = loader_workers(self.workers, self.device)
        return DataLoader(
            reader,
            batch_size=None,  # the reader yields whole batches
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=PREFETCH if workers else None,
            generator=torch.Generator(),  # else each epoch's iterator draws from the global
        )  # RNG (dropout's), and a run resumed inside an epoch would draw once more


def loader_workers(choice: int | None, device: torch.device) -> int:
    """train.loader_workers; null: none on the CPU (the cores train), 4 beside a GPU."""
    if choice is not None:
        return choice
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
