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


def plan_epoch(
    generator: torch.Generator,
    n: int,
    batch_size: int,
    augment_cfg: AugmentConfig,
    ctx: DistContext,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> EpochPlan:
    """Draw the epoch's order, then its augmentation, from `generator` (a CPU generator)."""
    order = torch.randperm(n, generator=generator)
    params = (
        augment.draw_params(generator, n, augment_cfg) if augment.is_enabled(augment_cfg) else None
    )
    return EpochPlan(
        order.to(device),
        None if params is None else params.to(device),
        shard_batches(n, batch_size, ctx.rank, ctx.world_size),
        memory_format,
    )
