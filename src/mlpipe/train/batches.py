"""Which images each step trains on: one shuffled order per epoch, cut into global batches,
each global batch split between the data-parallel ranks.

Every rank draws the same order (and augmentation parameters) from the same generator, so
the global batches are those of a single-process run; each rank takes its share of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlpipe.train import augment
from mlpipe.train.augment import AugmentParams
from mlpipe.train.config import AugmentConfig
from mlpipe.train.distributed import DistContext


@dataclass
class Span:
    start: int  # [start, stop): positions in the epoch's order, this rank's share
    stop: int
    loss_scale: float  # share * world / global batch: DDP's gradient mean = the batch mean


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Span]:
    """This rank's share of each global batch, split as evenly as possible.

    A last global batch smaller than `world_size` is dropped, so no rank gets an empty share
    and every rank takes the same number of steps.
    """
    spans = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        if size < world_size:
            continue
        base, extra = divmod(size, world_size)
        lo = start + rank * base + min(rank, extra)
        hi = lo + base + (1 if rank < extra else 0)
        spans.append(Span(lo, hi, (hi - lo) * world_size / size))
    return spans


def capped_batch_size(batch_size: int, n: int) -> int:
    """`train.batch_size`, at most the `n` training images: a larger batch is the whole split.

    Capped rather than refused: only train knows the split size, and by the time it runs DVC
    has removed its outputs. The caller warns; train.json records the batch used.
    """
    return min(batch_size, n)


def images_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Images all ranks together train on per epoch."""
    sizes = (min(batch_size, n - start) for start in range(0, n, batch_size))
    return sum(size for size in sizes if size >= world_size)


@dataclass
class EpochPlan:
    order: torch.Tensor  # (N,) int64 on the device: a permutation of the training images
    augment: AugmentParams | None  # per position in `order`, on the device
    spans: list[Span]
    memory_format: torch.memory_format

    def __len__(self) -> int:
        return len(self.spans)

    def batch(
        self, images: torch.Tensor, labels: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images, augmented, in the model's memory format; (B,) labels."""
        span = self.spans[step]
        idx = self.order[span.start : span.stop]
        x = images[idx]
        if self.augment is not None:
            x = self.augment.apply(x, span.start, span.stop)
        return x.contiguous(memory_format=self.memory_format), labels[idx]


def epoch_order(generator: torch.Generator, n: int, buffer: int | None = None) -> torch.Tensor:
    """(n,) positions in the epoch's training order: the one order policy of both data paths.

    A split of at most `buffer` images (train.shuffle_buffer; None: any size) is shuffled as
    a whole. A larger one is cut into windows of `buffer` consecutive positions (neighbouring
    rows of the same shards, so a streamed window reads a few shards, not all of them): the
    windows come in a shuffled order, and each window's images are shuffled within it.
    """
    if buffer is None or n <= buffer:
        return torch.randperm(n, generator=generator)
    windows = torch.randperm(-(-n // buffer), generator=generator)
    parts = []
    for w in windows.tolist():
        start = w * buffer
        size = min(buffer, n - start)
        parts.append(start + torch.randperm(size, generator=generator))
    return torch.cat(parts)


def plan_epoch(
    generator: torch.Generator,
    n: int,
    batch_size: int,
    augment_cfg: AugmentConfig,
    ctx: DistContext,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    shuffle_buffer: int | None = None,
) -> EpochPlan:
    """Draw the epoch's order, then its augmentation, from `generator` (a CPU generator)."""
    order = epoch_order(generator, n, shuffle_buffer)
    params = (
        augment.draw_params(generator, n, augment_cfg) if augment.is_enabled(augment_cfg) else None
    )
    return EpochPlan(
        order.to(device),
        None if params is None else params.to(device),
        shard_batches(n, batch_size, ctx.rank, ctx.world_size),
        memory_format,
    )
