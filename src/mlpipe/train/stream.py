"""Training and validation batches streamed from a split's shards, with bounded memory.

The order of an epoch is a pure function of (train.seed, epoch), drawn from the index
alone (no pixels): the shards in a shuffled order, the images of each shard shuffled,
then shuffled again within consecutive windows of `train.shuffle_buffer` images, so
that images of neighbouring shards mix. Rank r of a world of R takes the r-th of R equal
slices of that order (n // R images: every rank takes the same number of steps), cut
into batches of `batch_size // R`; batch k is read by DataLoader worker k mod W, and
the DataLoader hands batches back in worker order, so the batches (and what is learned)
do not depend on the number of workers. A worker reads a batch's rows from the
memory-mapped shards, a shard at a time, into one uint8 array: memory stays at a few
batches per worker whatever the size of the split.

Augmentation stays on the device, batched (mlpipe.train.augment): its parameters are
drawn per epoch from (seed, epoch, rank) for every position of the rank's slice.
Resuming at step k of an epoch regenerates the same order and starts at batch k.
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

from mlpipe.shards import ShardedSplit
from mlpipe.train import augment
from mlpipe.train.augment import AugmentParams
from mlpipe.train.config import AugmentConfig
from mlpipe.train.distributed import DistContext

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, C, H, W) uint8, (B,) int64
PREFETCH = 4  # batches each worker reads ahead


def epoch_order(split: ShardedSplit, seed: int, epoch: int, buffer: int) -> np.ndarray:
    """(N,) positions of the split's images in the epoch's training order."""
    rng = np.random.default_rng([seed, epoch])
    blocks = dict(split.shards_in_order())
    shards = rng.permutation(sorted(blocks))
    parts = [rng.permutation(blocks[int(s)]) for s in shards]
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    window = np.arange(len(order)) // buffer
    return order[np.lexsort((rng.random(len(order)), window))]


def rank_slice(n: int, ctx: DistContext) -> slice:
    """The rank's share of an epoch's order: n // world images each, the rest unused."""
    per_rank = n // ctx.world_size
    return slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)


def rank_batch_size(batch_size: int, world_size: int) -> int:
    return max(1, batch_size // world_size)


def read_rows(split: ShardedSplit, positions: np.ndarray, cache: dict[int, np.ndarray]) -> Batch:
    """The images at `positions` (in that order) and their labels, read shard by shard."""
    images = np.empty((len(positions), *split.image_shape), dtype=np.uint8)
    shards = split.shard[positions]
    for number in np.unique(shards):
        where = np.flatnonzero(shards == number)
        rows = split.offset[positions[where]]
        by_row = np.argsort(rows, kind="stable")  # forward reads through the memory map
        if int(number) not in cache:
            cache[int(number)] = split.read(int(number), verify=False)
        images[where[by_row]] = cache[int(number)][rows[by_row]]
    labels = split.labels[positions]
    return torch.from_numpy(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))


class BatchReader(IterableDataset[Batch]):
    """Batches `first`, `first + 1`, ... of `order` cut into `batch_size`; in a DataLoader,
    worker w of W reads batches first + w, first + w + W, ..."""

    def __init__(
        self, split: ShardedSplit, order: np.ndarray, batch_size: int, first: int = 0
    ) -> None:
        self.split, self.order, self.batch_size, self.first = split, order, batch_size, first

    def __len__(self) -> int:
        return max(0, -(-len(self.order) // self.batch_size) - self.first)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        cache: dict[int, np.ndarray] = {}  # memory maps: the OS keeps the pages, not us
        total = self.first + len(self)
        for k in range(self.first + worker, total, workers):
            batch = self.order[k * self.batch_size : (k + 1) * self.batch_size]
            yield read_rows(self.split, batch, cache)


@dataclass
class StreamEpoch:
    """One epoch of training batches on the device; iterates (x, y, loss_scale)."""

    loader: DataLoader[Batch]
    augment: AugmentParams | None
    batch_size: int
    first: int
    device: torch.device
    memory_format: torch.memory_format

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        start = self.first * self.batch_size
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment.apply(x, start, start + len(y))
            start += len(y)
            yield x.contiguous(memory_format=self.memory_format), y, 1.0


@dataclass
class StreamSplit:
    """A ShardedSplit as `fit` takes it (see engine.DataSource), streamed from disk."""

    split: ShardedSplit
    seed: int = 0
    shuffle_buffer: int = 10000
    workers: int | None = None  # None: 0 on the CPU, 4 on CUDA
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.split)

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
        per_rank = len(self) // ctx.world_size
        return -(-per_rank // rank_batch_size(batch_size, ctx.world_size))

    def train_images(self, batch_size: int, ctx: DistContext) -> int:
        return len(self) // ctx.world_size * ctx.world_size

    def train_epoch(
        self,
        generator: torch.Generator,  # unused: the order comes from (seed, epoch)
        epoch: int,
        batch_size: int,
        augment_cfg: AugmentConfig,
        ctx: DistContext,
        memory_format: torch.memory_format = torch.contiguous_format,
        first_step: int = 0,
    ) -> StreamEpoch:
        order = epoch_order(self.split, self.seed, epoch, self.shuffle_buffer)
        order = order[rank_slice(len(order), ctx)]
        size = rank_batch_size(batch_size, ctx.world_size)
        params = None
        if augment.is_enabled(augment_cfg):
            seed = np.random.SeedSequence([self.seed, epoch, ctx.rank]).generate_state(1)[0]
            drawn = augment.draw_params(
                torch.Generator().manual_seed(int(seed)), len(order), augment_cfg
            )
            params = drawn.to(self.device)
        loader = self._loader(BatchReader(self.split, order, size, first_step))
        return StreamEpoch(loader, params, size, first_step, self.device, memory_format)

    def ordered(self, batch_size: int, ctx: DistContext) -> Iterator[Batch]:
        """This rank's contiguous share of the split, in split order, on the device."""
        n = len(self)
        base, extra = divmod(n, ctx.world_size)
        lo = ctx.rank * base + min(ctx.rank, extra)
        hi = lo + base + (1 if ctx.rank < extra else 0)
        reader = BatchReader(self.split, np.arange(lo, hi), batch_size)
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
