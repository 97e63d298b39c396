"""Predictions over a split streamed from its shards: memory holds a batch of pixels (and
the operating system one mapped shard's pages), whatever the size of the split.

`predict_split` reads the split shard by shard, in row order (forward reads through each
memory map), and puts each image's logits at its position in the split; the figures read
only the few images they show (`ShardedSplit.read_rows`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlpipe.models import predict_logits
from mlpipe.shards import ShardedSplit


def predict_split(model: nn.Module, split: ShardedSplit, batch_size: int) -> torch.Tensor:
    """Logits (N, num_classes), fp32 on the CPU, in split order; each shard verified once."""
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    for number, positions in split.shards_in_order():
        pixels = split.read(number)  # a memory map
        rows = split.offset[positions]
        for start in range(0, len(positions), batch_size):
            x = np.ascontiguousarray(pixels[rows[start : start + batch_size]])
            logits = predict_logits(model, torch.from_numpy(x), batch_size)
            parts.append((positions[start : start + batch_size], logits))
    if not parts:
        return torch.zeros((0, 0))
    out = torch.empty((len(split), parts[0][1].shape[1]))
    for positions, logits in parts:
        out[torch.from_numpy(positions)] = logits
    return out
