"""Learning-rate multipliers: shape of each schedule over a whole run."""

from __future__ import annotations

import itertools

import pytest

from mlpipe.train.config import Schedule
from mlpipe.train.schedules import ONECYCLE_FINAL_DIV, ONECYCLE_START_DIV, lr_multiplier

TOTAL = 200
WARMUP_FRACTION = 0.1
WARMUP = 20  # round(0.1 * 200)


def curve(schedule: Schedule, total: int = TOTAL, warmup: float = WARMUP_FRACTION) -> list[float]:
    return [lr_multiplier(step, total, schedule, warmup) for step in range(total)]


def is_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def is_decreasing(values: list[float]) -> bool:
    return all(b < a for a, b in itertools.pairwise(values))


def test_onecycle_starts_peaks_and_ends():
    values = curve(Schedule.onecycle)
    assert values[0] == pytest.approx(1 / ONECYCLE_START_DIV)
    assert values[0] == pytest.approx(0.04)
    assert values[WARMUP] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == WARMUP
    assert is_increasing(values[: WARMUP + 1])
    assert is_decreasing(values[WARMUP:])
    assert values[-1] == pytest.approx(1 / ONECYCLE_FINAL_DIV, abs=1e-3)
    assert values[-1] < 0.01


def test_cosine_warms_up_to_one_then_decays_to_zero():
    values = curve(Schedule.cosine)
    assert values[0] < 0.1
    assert is_increasing(values[: WARMUP + 1])
    assert values[WARMUP] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0)
    assert is_decreasing(values[WARMUP:])
    assert values[-1] == pytest.approx(0.0, abs=1e-3)
    assert values[TOTAL // 2 + WARMUP // 2] == pytest.approx(0.5, abs=0.02)  # cosine midpoint


def test_constant_after_warmup():
    values = curve(Schedule.constant)
    assert is_increasing(values[: WARMUP + 1])
    assert values[0] < 0.1
    assert values[WARMUP:] == [1.0] * (TOTAL - WARMUP)


@pytest.mark.parametrize("schedule", list(Schedule))
def test_no_warmup(schedule):
    values = curve(schedule, warmup=0.0)
    assert values[0] == pytest.approx(1.0)
    assert max(values) == pytest.approx(1.0)
    if schedule is not Schedule.constant:
        assert is_decreasing(values)


@pytest.mark.parametrize("total", [1, 2, 7, 1000])
@pytest.mark.parametrize("warmup", [0.0, 0.15, 0.5, 0.99])
@pytest.mark.parametrize("schedule", list(Schedule))
def test_values_in_unit_interval(schedule, warmup, total):
    for step, value in enumerate(curve(schedule, total, warmup)):
        assert 0.0 < value <= 1.0, (schedule, warmup, total, step, value)
