"""Device, precision and process layout as config: resolved once, never branched on in the loop."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mlpipe.errors import ConfigError
from mlpipe.train import distributed
from mlpipe.train.config import DeviceChoice, Precision, RuntimeConfig
from mlpipe.train.distributed import DistContext

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32
    dist: DistContext = field(default_factory=DistContext)  # one process unless torchrun
    compile: bool = False  # torch.compile the training step
    channels_last: bool | None = None  # None: decided per model (see use_channels_last)

    @property
    def precision_name(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).split(".")[-1]

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_runtime(
    device: DeviceChoice,
    precision: Precision,
    num_threads: int = 0,
    *,
    deterministic: bool = False,
    compile: bool = False,
    channels_last: bool | None = None,
) -> Runtime:
    """Pick the device and precision; under torchrun also join the process group."""
    ctx = distributed.context_from_env()
    cuda = torch.cuda.is_available()
    if device is DeviceChoice.cuda and not cuda:
        raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available")
    use_cuda = device is DeviceChoice.cuda or (device is DeviceChoice.auto and cuda)
    dev = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    if precision is Precision.auto:
        dtype = torch.bfloat16 if dev.type == "cuda" else None
    elif precision is Precision.bf16:
        dtype = torch.bfloat16
    else:
        dtype = None
    _set_threads(dev, num_threads, ctx)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        # cuBLAS reads this when it first creates a handle; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic)
    distributed.init_process_group(ctx, dev.type)
    return Runtime(dev, dtype, ctx, compile, channels_last)


def runtime_for(cfg: RuntimeConfig) -> Runtime:
    """The `runtime` section, resolved on this machine."""
    return resolve_runtime(
        cfg.device,
        cfg.precision,
        cfg.num_threads,
        deterministic=cfg.deterministic,
        compile=cfg.compile,
        channels_last=cfg.channels_last,
    )


def _set_threads(dev: torch.device, num_threads: int, ctx: DistContext) -> None:
    if num_threads == 0 and dev.type == "cpu" and ctx.local_world_size > 1:
        # torchrun exports OMP_NUM_THREADS=1; share the cores between local ranks instead
        num_threads = max(1, (os.cpu_count() or 1) // ctx.local_world_size)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def use_channels_last(choice: bool | None, device: torch.device, model: nn.Module) -> bool:
    """null: on CUDA, for models with 2-d convolutions (tensor cores want NHWC)."""
    if choice is not None:
        return choice
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's global RNG states, as values torch.load(weights_only=True) accepts."""
    version, internal, gauss = random.getstate()
    numpy_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
