"""Where the training data lives while training: on the device, or streamed from shards.

`train.in_memory: auto` keeps today's fast path (train and val as tensors on the
device, batches gathered there by index) when the two splits' pixels take at most
`train.memory_share` of the device's memory: CUDA's total memory, or on the CPU the
memory available now (`MemAvailable` in /proc/meminfo, else `os.sysconf`). Otherwise
the splits stream from their shards (mlpipe.train.stream) with bounded memory.
Fashion-MNIST (about 50 MB of uint8 pixels) always fits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mlpipe.train.config import InMemory

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")


def use_in_memory(choice: InMemory | str, needed: int, capacity: int | None, share: float) -> bool:
    """Whether to hold `needed` bytes on a device of `capacity` bytes (None: unknown, and
    then in memory, as before streaming existed)."""
    choice = InMemory(choice)
    if choice is not InMemory.auto:
        return choice is InMemory.true
    return capacity is None or needed <= share * capacity


def available_ram(meminfo: Path = MEMINFO) -> int | None:
    """Bytes of RAM available without swapping, or None when the system does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def device_capacity(device: torch.device) -> int | None:
    """Bytes the training data may compete for: CUDA total memory, else available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return available_ram()


def decide(choice: str, needed: int, device: torch.device, share: float) -> bool:
    """`use_in_memory` on this machine, logged with its reason."""
    capacity = device_capacity(device)
    in_memory = use_in_memory(choice, needed, capacity, share)
    where = "on the device" if in_memory else "streamed from shards"
    room = "unknown" if capacity is None else f"{capacity / 2**30:.1f} GiB"
    log.info(
        "training data (%.2f GiB of pixels) %s (train.in_memory=%s, memory_share %.2f of %s)",
        needed / 2**30,
        where,
        choice,
        share,
        room,
    )
    return in_memory
