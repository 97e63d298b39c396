"""Data-parallel training under torchrun: who am I, and the few collectives the loop needs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op
for one process. Backend: nccl on CUDA, gloo on CPU.

Collectives give up after MLPIPE_DIST_TIMEOUT_S seconds (default 300, not torch's 30
minutes for gloo): a peer that hangs fails the run with an error instead of holding the
other nodes for half an hour. A peer that dies closes its connections, which fails its
partners' next collective at once.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mlpipe.errors import ConfigError, MlpipeError

TIMEOUT_ENV = "MLPIPE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0


class RanksDisagree(MlpipeError):
    """The processes of one run do not hold the same state: training them would diverge."""


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
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s()),
        )


def timeout_s(environ: dict[str, str] | None = None) -> float:
    """How long a collective waits for the other ranks (MLPIPE_DIST_TIMEOUT_S)."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not raw.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


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


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank (pickled; tensors in it arrive on the CPU). A collective."""
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def tensors_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short hash of named tensors' dtypes, shapes and bytes (e.g. a state_dict's items)."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def disagreement(values: list[Any], what: str) -> str | None:
    """Why the ranks' `values` (index = rank) do not all equal rank 0's; None if they do."""
    odd = [rank for rank, value in enumerate(values) if value != values[0]]
    if not odd:
        return None
    more = f" (and {len(odd) - 1} more ranks differ)" if len(odd) > 1 else ""
    first = f"rank {odd[0]} has {values[odd[0]]}"
    return f"ranks disagree on {what}: rank 0 has {values[0]}, {first}{more}"


def require_agreement(value: Any, what: str, ctx: DistContext, fix: str) -> None:
    """Stop every rank at once (the same error everywhere) unless all hold the same `value`.
    A collective: all ranks must call it."""
    problem = disagreement(gather_objects(value, ctx), what)
    if problem is not None:
        raise RanksDisagree(f"{problem}; {fix}")


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
