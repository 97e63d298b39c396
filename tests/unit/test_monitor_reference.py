"""The monitoring reference: a probe that gives the model's own logits and the input of its
last linear layer, for every architecture; saved and loaded whole, refused when incomplete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlpipe.dataset import ImageDataset, ImageSplit, ShardedDataset, write_shards
from mlpipe.errors import DataError
from mlpipe.models import ARCHITECTURES, build_model, load_config
from mlpipe.monitor.reference import (
    NoReference,
    build_reference,
    embed,
    last_linear,
    load_reference,
    save_reference,
)


def dataset(splits: list[str], n: int = 12) -> ImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10
    return ImageDataset(
        {s: ImageSplit(images, labels) for s in splits}, [str(i) for i in range(10)], "t"
    )


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_probe_gives_logits_and_the_last_linear_input(arch: str, one_thread: None) -> None:
    torch.manual_seed(0)
    model = build_model(load_config({"model": {"arch": arch}}), 1, 10, [0.3], [0.3]).eval()
    data = dataset(["train"])
    ref = build_reference(model, data)
    assert ref.probe is not None
    images = data.splits["train"].images[:5]
    seen: list[torch.Tensor] = []
    head = last_linear(model)
    hook = head.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        logits = model(torch.as_tensor(images).float())
    hook.remove()
    embeddings, predicted = embed(ref.probe, images)
    assert embeddings.shape == (5, head.in_features)
    np.testing.assert_allclose(embeddings, seen[0].numpy(), atol=1e-5)
    assert predicted.tolist() == logits.argmax(1).tolist()


def test_the_validation_split_is_preferred_and_sampled(tmp_path: Path, one_thread: None) -> None:
    model = build_model(load_config({"model": {"arch": "cnn"}}), 1, 10, [0.3], [0.3]).eval()
    ref = build_reference(model, dataset(["train", "val"], n=30), max_sample=8)
    assert (ref.split, ref.split_size, len(ref.pixels), len(ref.embeddings)) == ("val", 30, 8, 8)
    save_reference(ref, tmp_path / "ref")
    back = load_reference(tmp_path / "ref")
    np.testing.assert_array_equal(back.embeddings, ref.embeddings)
    assert back.class_counts.sum() == 8 and back.meta() == ref.meta()


def test_incomplete_reference_is_refused(tmp_path: Path) -> None:
    (tmp_path / "reference.json").write_text("{}")
    with pytest.raises(NoReference, match=r"no monitoring reference \(reference.npz, probe"):
        load_reference(tmp_path)


def test_a_sharded_dataset_gives_the_same_reference_reading_only_its_sample(
    tmp_path: Path, one_thread: None
) -> None:
    model = build_model(load_config({"model": {"arch": "cnn"}}), 1, 10, [0.3], [0.3]).eval()
    data = dataset(["train", "val"], n=40)
    splits = {
        n: write_shards(tmp_path, n, s, shard_bytes=28 * 28 * 7) for n, s in data.splits.items()
    }
    sharded = ShardedDataset(splits, data.class_names, data.source)  # 7 images a shard
    assert len(sharded.splits["val"].shards) > 1
    a = build_reference(model, data, max_sample=9)
    b = build_reference(model, sharded, max_sample=9)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.meta() == b.meta()
    shard = sharded.splits["val"].shards[0].path
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x01")
    with pytest.raises(DataError, match=rf"{shard.name}: shard content does not match"):
        build_reference(model, sharded, max_sample=40)
