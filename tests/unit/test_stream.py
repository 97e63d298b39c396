"""Streaming training data from shards (mlpipe.train.stream): the one order policy of both
paths, the partition between DataLoader workers and ranks, resuming inside an epoch, and
streamed training learning the same weights as in-memory training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mlpipe.dataset import ImageSplit, write_shards
from mlpipe.models import build_model
from mlpipe.models.cnn import CNNConfig
from mlpipe.shards import ShardedSplit
from mlpipe.train.batches import epoch_order
from mlpipe.train.config import AugmentConfig, TrainConfig
from mlpipe.train.device import Runtime, seed_everything
from mlpipe.train.distributed import DistContext
from mlpipe.train.engine import TensorData, fit
from mlpipe.train.stream import StreamSplit

pytestmark = pytest.mark.usefixtures("one_thread")
N = 300
SHAPE = (1, 4, 4)


def numbered(n: int = N) -> ImageSplit:
    """Image i carries i in its first two pixels, so a batch says which images it holds."""
    images = np.zeros((n, *SHAPE), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.divmod(np.arange(n), 256)
    return ImageSplit(images, (np.arange(n) % 3).astype(np.int64))


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> ShardedSplit:
    """300 images in 7 shards of 48 (the last 12): several shards, uneven."""
    folder = tmp_path_factory.mktemp("shards")
    return write_shards(folder, "train", numbered(), shard_bytes=48 * 16)


def ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def streamed(stream: StreamSplit, seed: int, batch: int, ctx: DistContext, first: int = 0):
    batches = stream.train_epoch(gen(seed), 1, batch, AugmentConfig(), ctx, first_step=first)
    return [(ids(x), y.tolist()) for x, y, _ in batches]


def test_epoch_order_is_a_seeded_permutation_windowed_beyond_the_buffer() -> None:
    whole = epoch_order(gen(1), N)
    assert torch.equal(whole, torch.randperm(N, generator=gen(1)))  # as before streaming
    assert torch.equal(epoch_order(gen(1), N, buffer=N), whole)
    windowed = epoch_order(gen(1), N, buffer=64)
    assert sorted(windowed.tolist()) == list(range(N))  # every image once
    assert torch.equal(windowed, epoch_order(gen(1), N, buffer=64))
    assert not torch.equal(windowed, epoch_order(gen(2), N, buffer=64))
    # the order runs through whole windows of 64 neighbours (the last one 44), shuffled
    windows, k = [], 0
    while k < N:
        w = int(windowed[k]) // 64
        size = min(64, N - 64 * w)
        assert set((windowed[k : k + size] // 64).tolist()) == {w}
        windows.append(w)
        k += size
    assert sorted(windows) == [0, 1, 2, 3, 4] and windows != sorted(windows)


def test_streamed_batches_hold_the_ordered_images_and_labels(split: ShardedSplit) -> None:
    stream = StreamSplit(split, shuffle_buffer=64)
    batches = streamed(stream, 5, 32, DistContext())
    assert len(batches) == stream.train_steps(32, DistContext()) == 10
    seen = [i for b, _ in batches for i in b]
    assert seen == epoch_order(gen(5), N, 64).tolist()
    assert [label for _, y in batches for label in y] == [i % 3 for i in seen]


def test_a_split_may_use_some_rows_of_its_shards(split: ShardedSplit) -> None:
    """Like val taken out of train by index: positions 0.. of the split are rows elsewhere."""
    rows = np.arange(N)[::-7]
    part = ShardedSplit(
        split.shards, SHAPE, split.labels[rows], split.shard[rows], split.offset[rows]
    )
    stream = StreamSplit(part)
    assert [i for b in stream.ordered(10, DistContext()) for i in ids(b[0])] == rows.tolist()
    seen = [b for b, _ in streamed(stream, 1, 8, DistContext())]
    assert sorted(i for b in seen for i in b) == sorted(rows.tolist())


@pytest.mark.parametrize("world", [2, 3])
def test_workers_and_ranks_partition_the_epoch(split: ShardedSplit, world: int) -> None:
    """Each rank the same steps, together each global batch of one process, none shared; the
    batches do not depend on the number of DataLoader workers."""
    per_rank = []
    for rank in range(world):
        ctx = DistContext(rank, world)
        alone = streamed(StreamSplit(split, workers=0), 2, 32, ctx)
        assert streamed(StreamSplit(split, workers=2), 2, 32, ctx) == alone
        assert len(alone) == StreamSplit(split).train_steps(32, ctx)
        per_rank.append([b for b, _ in alone])
    one_process = streamed(StreamSplit(split), 2, 32, DistContext())
    for step, whole in enumerate(one_process):
        assert [i for shares in per_rank for i in shares[step]] == whole[0]


def test_resuming_inside_an_epoch_continues_the_same_batches(split: ShardedSplit) -> None:
    stream = StreamSplit(split, workers=2)
    whole = streamed(stream, 4, 32, DistContext())
    assert streamed(stream, 4, 32, DistContext(), first=4) == whole[4:]


def test_augmentation_is_drawn_after_the_order_and_kept_by_position(split: ShardedSplit) -> None:
    stream = StreamSplit(split)
    flips = AugmentConfig(hflip=True)

    def pixels(first: int) -> list[torch.Tensor]:
        batches = stream.train_epoch(gen(4), 1, 32, flips, DistContext(), first_step=first)
        return [x for x, _, _ in batches]

    whole = pixels(0)
    flipped = torch.cat([x[:, 0, 0, 3] + x[:, 0, 0, 2] > 0 for x in whole])  # id moved right
    assert 0.3 < flipped.float().mean() < 0.7  # about half the images mirrored
    unflipped = [
        torch.where(f[:, None, None, None], x.flip(-1), x)
        for x, f in zip(whole, flipped.split(32), strict=True)
    ]
    assert [i for x in unflipped for i in ids(x)] == epoch_order(gen(4), N).tolist()
    assert all(torch.equal(a, b) for a, b in zip(pixels(3), whole[3:], strict=True))


def digits(folder: Path) -> tuple[ShardedSplit, ShardedSplit]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * 255 / 16).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    tr, va = order[:1400], order[1400:]
    return (
        write_shards(folder, "train", ImageSplit(images[tr], labels[tr]), shard_bytes=64 * 200),
        write_shards(folder, "val", ImageSplit(images[va], labels[va])),
    )


@pytest.mark.parametrize("buffer", [None, 256])
def test_streamed_and_in_memory_training_learn_the_same_weights(
    tmp_path: Path, buffer: int | None
) -> None:
    """Same seed, same batches (order, windows beyond the buffer, augmentation): the same
    weights and history, with dropout, augmentation and several shards, and it learns."""
    train, val = digits(tmp_path)
    aug = AugmentConfig(crop_padding=1, hflip=True)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.01, seed=0, augment=aug)
    model_cfg = CNNConfig(channels=[8, 16], pool_size=2, hidden=32, dropout=0.2)
    cpu = Runtime(torch.device("cpu"), None)
    runs = {}
    for name, data in {
        "memory": (
            TensorData.from_numpy(train.load(), train.labels, buffer),
            TensorData.from_numpy(val.load(), val.labels),
        ),
        "stream": (StreamSplit(train, shuffle_buffer=buffer, workers=1), StreamSplit(val)),
    }.items():
        seed_everything(0)
        model = build_model(model_cfg, 1, 10, [0.3], [0.4])
        history = fit(model, data[0], data[1], cfg, cpu)
        runs[name] = model.state_dict(), [e.train_loss for e in history.epochs], history
    (memory, memory_loss, history), (stream, stream_loss, _) = runs["memory"], runs["stream"]
    assert history.epochs[-1].val_accuracy > 0.5  # it learns (chance: 0.1)
    assert stream_loss == memory_loss
    for key, tensor in memory.items():
        assert torch.equal(tensor, stream[key]), key


class Interrupted(Exception):
    pass


class MemoryCheckpointer:
    """engine.Checkpointer in memory; 'kills' the run right after saving at `kill_at`
    (completed epochs, steps into the next)."""

    where = "memory"

    def __init__(self, kill_at: tuple[int, int] | None = None) -> None:
        self.state: dict | None = None
        self.kill_at = kill_at

    def load(self) -> dict | None:
        return self.state

    def save(self, state: dict) -> None:
        self.state = copy.deepcopy(state)
        if (state["epoch"], state["step"]) == self.kill_at:
            raise Interrupted

    def reject(self, reason: str) -> None:
        raise AssertionError(reason)


@pytest.mark.parametrize("source", ["stream", "memory"])
def test_a_run_interrupted_inside_an_epoch_resumes_to_the_same_weights(
    tmp_path: Path, source: str
) -> None:
    """Killed 6 steps into epoch 2 (train.checkpoint_every_steps=3): the resumed run draws
    the epoch's order again, skips the 6 batches done and ends with the same weights,
    history and all, as the uninterrupted run (with dropout, augmentation and EMA)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 320)
    images = np.clip(labels[:, None, None, None] * 80 + rng.normal(40, 40, (320, 1, 8, 8)), 0, 255)
    data = ImageSplit(images.astype(np.uint8), labels.astype(np.int64))
    train = write_shards(
        tmp_path, "train", ImageSplit(data.images[:256], data.labels[:256]), 8 * 64 * 5
    )
    val = write_shards(tmp_path, "val", ImageSplit(data.images[256:], data.labels[256:]))
    cfg = TrainConfig(
        epochs=3, batch_size=32, seed=1, checkpoint_every_steps=3, ema_decay=0.9,
        augment=AugmentConfig(crop_padding=1, hflip=True),
    )  # fmt: skip
    model_cfg = CNNConfig(channels=[4], pool_size=2, hidden=16, dropout=0.3)
    cpu = Runtime(torch.device("cpu"), None)

    def run(checkpointer: MemoryCheckpointer | None, workers: int):
        if source == "stream":
            pair = StreamSplit(train, 64, workers), StreamSplit(val)
        else:
            pair = (TensorData.from_numpy(s.load(), s.labels, 64) for s in (train, val))
        seed_everything(1)
        model = build_model(model_cfg, 1, 3, [0.4], [0.3])
        history = fit(model, *pair, cfg, cpu, checkpointer=checkpointer)
        return model.state_dict(), history

    whole, whole_history = run(None, 0)
    killed = MemoryCheckpointer(kill_at=(1, 6))
    with pytest.raises(Interrupted):
        run(killed, 0)
    killed.kill_at = None
    resumed, history = run(killed, 2)
    assert history.resumed_from_epoch == 1
    assert [e.train_loss for e in history.epochs] == [e.train_loss for e in whole_history.epochs]
    assert [e.val_accuracy for e in history.epochs] == [
        e.val_accuracy for e in whole_history.epochs
    ]
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
