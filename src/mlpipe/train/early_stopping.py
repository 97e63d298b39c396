"""Stop when a validation metric has not improved for `patience` epochs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mlpipe.train.config import Monitor


@dataclass
class EarlyStopping:
    patience: int  # 0: never stop
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    monitor: Monitor = Monitor.val_loss
    best: float = math.nan  # nan until the first epoch
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_epoch: int = 0  # 0: not stopped

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch > 0

    def update(self, value: float, epoch: int) -> bool:
        """Record epoch `epoch`'s metric; True when training should stop after it."""
        if self._improves(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        if self.patience > 0 and self.bad_epochs >= self.patience:
            self.stopped_epoch = epoch
        return self.should_stop

    def _improves(self, value: float) -> bool:
        if math.isnan(self.best):
            return True
        if self.monitor is Monitor.val_loss:
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["monitor"] = self.monitor.value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best", "best_epoch", "bad_epochs", "stopped_epoch"):
            setattr(self, key, state[key])
