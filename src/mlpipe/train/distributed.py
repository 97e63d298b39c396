"""Data-parallel training under torchrun: who am I, and the few collectives the loop needs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op
for one process. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mlpipe.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def context_from_env() -> DistContext:
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as exc:
        raise ConfigError(f"torchrun environment: {exc}") from None
    if not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: RANK={rank} outside WORLD_SIZE={world}")
    return DistContext(rank, world, local_rank, local_world)


def init_process_group(ctx: DistContext, device_type: str) -> None:
    """Join the process group (env:// rendezvous set up by torchrun); once per process."""
    if ctx.is_distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """Sum each tensor over ranks, in place."""
    if ctx.is_distributed:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere: ranks see different batches."""
    if ctx.is_distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective: all ranks must call it)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
