"""train.in_memory: the decision between tensors on the device and streaming shards."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mlpipe.errors import ConfigError
from mlpipe.train.config import InMemory, TrainConfig
from mlpipe.train.memory import available_ram, use_in_memory

GIB = 2**30


@pytest.mark.parametrize(
    ("choice", "needed", "capacity", "expected"),
    [
        ("auto", 50 * 2**20, 16 * GIB, True),  # Fashion-MNIST on anything
        ("auto", 8 * GIB, 16 * GIB, True),  # exactly the share
        ("auto", 8 * GIB + 1, 16 * GIB, False),
        ("auto", 100 * GIB, None, True),  # capacity unknown: as before streaming existed
        ("true", 100 * GIB, 16 * GIB, True),  # forced: the user knows better
        ("false", 1, 16 * GIB, False),
        (InMemory.false, 1, None, False),
    ],
)
def test_use_in_memory(choice: str, needed: int, capacity: int | None, expected: bool) -> None:
    assert use_in_memory(choice, needed, capacity, 0.5) is expected


def test_available_ram_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert available_ram(meminfo) == 1000 * 1024
    assert (available_ram(tmp_path / "absent") or 0) > 0  # os.sysconf, on Linux


def load(values: dict[str, object]) -> TrainConfig:
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), values)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("value", "expected"), [(True, "true"), (False, "false"), ("auto", "auto")]
)
def test_in_memory_takes_yaml_booleans(value: object, expected: str) -> None:
    """`-S train.in_memory=false` and `in_memory: true` in YAML arrive as booleans."""
    assert load({"in_memory": value}).in_memory == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("in_memory", "sometimes", "train.in_memory: must be one of auto, true, false"),
        ("memory_share", 0.0, "train.memory_share: must be in (0, 1]"),
        ("shuffle_buffer", 0, "train.shuffle_buffer: must be > 0"),
        ("loader_workers", -1, "train.loader_workers: must be >= 0"),
    ],
)
def test_bad_streaming_settings(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({key: value})
    assert message.split(": ", 1)[1] in str(err.value)
