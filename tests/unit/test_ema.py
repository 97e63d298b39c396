"""The EMA of weights: update maths, warm-up, buffers, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlpipe.train.ema import ModelEma, ema_decay_at


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1, bias=False)
        self.norm = nn.BatchNorm1d(1)  # float running stats + an int64 batch counter


def set_weight(model: Tiny, value: float) -> None:
    with torch.no_grad():
        model.linear.weight.fill_(value)


def test_decay_warms_up_then_caps():
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.5, 1) == pytest.approx(2 / 11)  # warm-up below the cap
    assert ema_decay_at(0.5, 100) == 0.5


def test_update_is_the_exponential_moving_average():
    model = Tiny()
    set_weight(model, 0.0)
    ema = ModelEma(model, decay=0.5)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 4.0, -3.0, 5.0], start=1):
        set_weight(model, value)
        ema.update()
        d = ema_decay_at(0.5, step)
        expected = d * expected + (1 - d) * value
        assert ema.module.linear.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert ema.num_updates == 5


def test_float_buffers_are_averaged_int_buffers_copied():
    model = Tiny()
    ema = ModelEma(model, decay=0.9)
    with torch.no_grad():
        model.norm.running_mean.fill_(10.0)
    model.norm.num_batches_tracked.fill_(7)
    for _ in range(3):
        ema.update()
    mean = ema.module.norm.running_mean.item()
    assert 0.0 < mean < 10.0  # moved towards the model's value, not copied
    assert ema.module.norm.num_batches_tracked.item() == 7


def test_shadow_is_separate_frozen_and_in_eval_mode():
    model = Tiny().train()
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    set_weight(model, 3.0)
    assert ema.module.linear.weight[0, 0].item() != 3.0


def test_state_round_trip_continues_identically():
    model = Tiny()
    first = ModelEma(model, decay=0.99)
    for value in (1.0, 2.0):
        set_weight(model, value)
        first.update()
    second = ModelEma(model, decay=0.99)  # a fresh shadow (of the current weights)
    assert not torch.equal(second.module.linear.weight, first.module.linear.weight)
    second.load_state_dict(first.state_dict())
    set_weight(model, 5.0)
    first.update()
    second.update()
    assert second.num_updates == first.num_updates == 3
    assert torch.equal(second.module.linear.weight, first.module.linear.weight)
