"""Learning-rate schedules as pure functions of the step (cf. nanoGPT's get_lr)."""

from __future__ import annotations

import math

from mlpipe.train.config import Schedule

ONECYCLE_START_DIV = 25.0  # warmup starts at lr / 25, as torch's OneCycleLR
ONECYCLE_FINAL_DIV = 1e4  # and anneals to lr / 1e4 at the end


def lr_multiplier(step: int, total_steps: int, schedule: Schedule, warmup_fraction: float) -> float:
    """Factor applied to the peak learning rate at optimiser step `step` (0-based)."""
    total_steps = max(total_steps, 1)
    warmup = round(warmup_fraction * total_steps)
    progress_in_decay = (step - warmup) / max(total_steps - warmup, 1)
    if schedule is Schedule.onecycle:
        start, final = 1.0 / ONECYCLE_START_DIV, 1.0 / ONECYCLE_FINAL_DIV
        if step < warmup:
            return _cosine_between(start, 1.0, step / warmup)
        return _cosine_between(1.0, final, min(progress_in_decay, 1.0))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule is Schedule.cosine:
        return _cosine_between(1.0, 0.0, min(progress_in_decay, 1.0))
    return 1.0


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))
