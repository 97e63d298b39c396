"""The pure parts of multi-node agreement (issue 12): timeouts, digests, disagreement lines."""

from __future__ import annotations

import pytest
import torch

from mlpipe.errors import ConfigError
from mlpipe.train import distributed
from mlpipe.train.distributed import DistContext


def test_timeout_defaults_to_minutes_not_half_an_hour() -> None:
    assert distributed.timeout_s({}) == distributed.DEFAULT_TIMEOUT_S == 300
    assert distributed.timeout_s({"MLPIPE_DIST_TIMEOUT_S": "45"}) == 45
    assert distributed.timeout_s({"MLPIPE_DIST_TIMEOUT_S": " "}) == 300


@pytest.mark.parametrize("raw", ["0", "-5", "soon", "nan"])
def test_bad_timeout_is_one_line_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^MLPIPE_DIST_TIMEOUT_S=.*expected a number"):
        distributed.timeout_s({"MLPIPE_DIST_TIMEOUT_S": raw})


def test_digest_sees_values_names_dtypes_and_shapes() -> None:
    a = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    same = {k: v.clone() for k, v in a.items()}
    digest = distributed.tensors_digest(a.items())
    assert digest == distributed.tensors_digest(same.items())
    changed = [
        {"w": a["w"] + 1e-6, "n": a["n"]},
        {"w": a["w"].reshape(3, 2), "n": a["n"]},
        {"w": a["w"].double(), "n": a["n"]},
        {"v": a["w"], "n": a["n"]},
        {"w": a["w"], "n": torch.tensor(4)},
    ]
    for other in changed:
        assert distributed.tensors_digest(other.items()) != digest
    assert distributed.tensors_digest([("e", torch.zeros(0))])  # empty tensors too


def test_disagreement_names_rank_0_and_the_first_odd_rank() -> None:
    assert distributed.disagreement(["a", "a", "a"], "x") is None
    assert distributed.disagreement(["a", "b", "a"], "the start") == (
        "ranks disagree on the start: rank 0 has a, rank 1 has b"
    )
    assert distributed.disagreement(["a", "a", "c", "d"], "x") == (
        "ranks disagree on x: rank 0 has a, rank 2 has c (and 1 more ranks differ)"
    )


def test_one_process_needs_no_collective() -> None:
    ctx = DistContext()
    assert distributed.broadcast_object({"k": 1}, ctx) == {"k": 1}
    distributed.require_agreement("anything", "x", ctx, "fix")  # nothing to compare
