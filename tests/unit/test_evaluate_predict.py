"""evaluate's predictions streamed from shards equal those over the split in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mlpipe.dataset import ImageSplit, write_shards
from mlpipe.evaluate.predict import predict_split
from mlpipe.models import build_model, predict_logits
from mlpipe.models.cnn import CNNConfig
from mlpipe.shards import ShardedSplit


def test_streamed_predictions_are_in_split_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (90, 1, 6, 6), dtype=np.uint8)
    whole = write_shards(tmp_path, "test", ImageSplit(images, np.arange(90) % 3), 36 * 20)
    assert len(whole.shards) == 5
    rows = rng.permutation(90)[:70]  # some rows of every shard, out of order
    split = ShardedSplit(
        whole.shards, whole.image_shape, whole.labels[rows], whole.shard[rows], whole.offset[rows]
    )
    torch.manual_seed(0)
    model = build_model(CNNConfig(channels=[4], pool_size=2, hidden=8), 1, 3, [0.5], [0.3])
    expected = predict_logits(model, torch.from_numpy(images[rows]), 16)
    assert torch.allclose(predict_split(model, split, 16), expected, atol=1e-5)
    assert np.array_equal(split.read_rows([5, 0, 69]), images[rows[[5, 0, 69]]])
