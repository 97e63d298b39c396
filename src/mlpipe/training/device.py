"""Device and precision as config: resolved once, never branched on inside the loop."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from mlpipe.config import DeviceChoice, Precision
from mlpipe.errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32

    @property
    def precision_name(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).split(".")[-1]

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_runtime(device: DeviceChoice, precision: Precision, num_threads: int = 0) -> Runtime:
    cuda = torch.cuda.is_available()
    if device is DeviceChoice.cuda and not cuda:
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    dev = torch.device(
        "cuda" if device is DeviceChoice.cuda or (device is DeviceChoice.auto and cuda) else "cpu"
    )
    if precision is Precision.auto:
        dtype = torch.bfloat16 if dev.type == "cuda" else None
    elif precision is Precision.bf16:
        dtype = torch.bfloat16
    else:
        dtype = None
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
