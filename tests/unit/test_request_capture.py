"""`mlpipe serve --sample-dir`: the guard keeps a bounded, atomic sample of answered requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.unit.test_serve_guard import JSON, FakeMlflow, call

from mlpipe.errors import ConfigError
from mlpipe.monitor.batch import load_batch
from mlpipe.tracking.capture import RequestSampler, kept
from mlpipe.tracking.guard import RequestGuard, RequestLimits

SHAPE = (1, 4, 4)


def batch(n: int, value: int) -> np.ndarray:
    return np.full((n, *SHAPE), value, dtype=np.int64)


def test_kept_requests_are_whole_files_and_the_oldest_go_beyond_the_bound(tmp_path: Path):
    sampler = RequestSampler(tmp_path / "sample", rate=1.0, max_images=5)
    for value in range(4):  # 2 images each: 8 offered, at most 5 kept
        assert sampler.offer(batch(2, value)) is not None
    files = sorted(kept(sampler.folder), key=lambda f: f[1])
    assert [n for _, _, n in files] == [2, 2]  # 4 images: a third file would make 6
    assert not list(sampler.folder.glob(".*"))  # no temporary left behind
    images = load_batch(sampler.folder).images
    assert images.dtype == np.uint8 and images.shape == (4, *SHAPE)
    assert sorted(set(images.reshape(4, -1)[:, 0])) == [2, 3]  # the newest two requests


def test_the_rate_keeps_about_that_share(tmp_path: Path):
    sampler = RequestSampler(tmp_path, rate=0.25, max_images=10_000, seed=0)
    kept_files = [sampler.offer(batch(1, 0)) for _ in range(400)]
    assert 60 <= sum(p is not None for p in kept_files) <= 140


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "--sample-rate: must be in (0, 1], got 0.0"),
        ({"rate": 1.5}, "--sample-rate: must be in (0, 1], got 1.5"),
        ({"max_images": 0}, "--sample-max-images: must be >= 1, got 0"),
    ],
)
def test_bad_settings_name_the_option(tmp_path: Path, kwargs, message):
    with pytest.raises(ConfigError) as info:
        RequestSampler(tmp_path, **kwargs)
    assert str(info.value) == message


def test_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^--sample-dir .*/file/sample: Not a directory$"):
        RequestSampler(tmp_path / "file" / "sample")


def test_the_guard_samples_answered_requests_only(tmp_path: Path):
    sampler = RequestSampler(tmp_path, rate=1.0, max_images=100)
    limits = RequestLimits(SHAPE, max_batch=8)
    ok = json.dumps({"inputs": batch(3, 7).tolist()}).encode()
    assert call(RequestGuard(FakeMlflow(), limits, sampler=sampler), ok, JSON)[0] == 200
    refused = json.dumps({"inputs": batch(3, 300).tolist()}).encode()
    assert call(RequestGuard(FakeMlflow(), limits, sampler=sampler), refused, JSON)[0] == 400
    failing = FakeMlflow(status=500, message="boom")
    assert call(RequestGuard(failing, limits, sampler=sampler), ok, JSON)[0] == 500
    files = kept(tmp_path)
    assert [n for _, _, n in files] == [3]
    assert (load_batch(tmp_path).images == 7).all()


def test_a_full_disk_is_logged_not_raised(tmp_path: Path, caplog):
    sampler = RequestSampler(tmp_path / "s", rate=1.0)
    sampler.folder.rmdir()  # the folder went away under the server
    (tmp_path / "s").write_text("not a folder")
    assert sampler.offer(batch(1, 0)) is None
    assert "request sample not kept in" in caplog.text
