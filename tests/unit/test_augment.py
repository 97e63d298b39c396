"""Random crop and flip on whole batches: the maths against a per-image reference, shapes,
dtypes and determinism per seed."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mlpipe.errors import ConfigError
from mlpipe.train.augment import crop_flip, draw_params, is_enabled
from mlpipe.train.config import AugmentConfig

H, W = 6, 5


def images(n: int = 8, channels: int = 2, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Distinct, non-zero pixel values, so a wrong index is always visible."""
    values = torch.arange(1, n * channels * H * W + 1) % 250 + 1
    return values.view(n, channels, H, W).to(dtype)


def reference(x: torch.Tensor, dy: int, dx: int, flip: bool, padding: int) -> torch.Tensor:
    """One image the obvious way: pad, crop, then mirror."""
    padded = F.pad(x, (padding, padding, padding, padding))
    crop = padded[:, dy : dy + H, dx : dx + W]
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("padding", [1, 2, 3])
@pytest.mark.parametrize("hflip", [False, True])
def test_matches_per_image_reference(padding, hflip):
    x = images()
    params = draw_params(torch.Generator().manual_seed(0), len(x), AugmentConfig(padding, hflip))
    out = params.apply(x, 0, len(x))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert params.shifts is not None
    for i in range(len(x)):
        dy, dx = (int(v) for v in params.shifts[i])
        flip = bool(params.flips[i]) if params.flips is not None else False
        assert torch.equal(out[i], reference(x[i], dy, dx, flip, padding)), i


def test_flip_only_mirrors_exactly_the_flagged_images():
    x = images()
    flips = torch.tensor([True, False] * 4)
    out = crop_flip(x, None, flips, padding=0)
    assert torch.equal(out[flips], x[flips].flip(-1))
    assert torch.equal(out[~flips], x[~flips])


def test_centre_shift_without_flip_is_identity():
    x = images()
    shifts = torch.full((len(x), 2), 2)
    assert torch.equal(crop_flip(x, shifts, None, padding=2), x)


def test_extreme_shifts_move_content_and_fill_zeros():
    x = images(n=1, channels=1)
    out = crop_flip(x, torch.tensor([[0, 0]]), None, padding=2)  # content moves down-right
    assert torch.equal(out[0, 0, 2:, 2:], x[0, 0, :-2, :-2])
    assert out[0, 0, :2].eq(0).all() and out[0, 0, :, :2].eq(0).all()


def test_offsets_cover_the_whole_range_and_flips_are_balanced():
    params = draw_params(torch.Generator().manual_seed(1), 4000, AugmentConfig(2, True))
    assert params.shifts is not None and params.flips is not None
    assert params.shifts.dtype == torch.int64 and params.shifts.shape == (4000, 2)
    assert set(params.shifts.unique().tolist()) == {0, 1, 2, 3, 4}
    assert 0.45 < params.flips.float().mean().item() < 0.55


def test_same_seed_same_augmentation_other_seed_differs():
    x = images(n=64)
    cfg = AugmentConfig(crop_padding=2, hflip=True)

    def augmented(seed: int) -> torch.Tensor:
        return draw_params(torch.Generator().manual_seed(seed), len(x), cfg).apply(x, 0, len(x))

    assert torch.equal(augmented(7), augmented(7))
    assert not torch.equal(augmented(7), augmented(8))


def test_slices_follow_positions_in_the_epoch_order():
    x = images(n=8)
    params = draw_params(torch.Generator().manual_seed(2), 8, AugmentConfig(2, True))
    whole = params.apply(x, 0, 8)
    assert torch.equal(params.apply(x[3:6], 3, 6), whole[3:6])


def test_float_images_and_channels_last_keep_dtype_and_values():
    x = images(dtype=torch.float32)
    params = draw_params(torch.Generator().manual_seed(3), len(x), AugmentConfig(1, True))
    out = params.apply(x.contiguous(memory_format=torch.channels_last), 0, len(x))
    assert out.dtype == torch.float32
    assert torch.equal(out, params.apply(x, 0, len(x)))


def test_off_draws_nothing():
    generator = torch.Generator().manual_seed(4)
    before = generator.get_state()
    params = draw_params(generator, 10, AugmentConfig())
    assert params.shifts is None and params.flips is None
    assert torch.equal(generator.get_state(), before)
    assert not is_enabled(AugmentConfig())
    assert is_enabled(AugmentConfig(hflip=True)) and is_enabled(AugmentConfig(crop_padding=1))


def test_negative_padding_is_a_config_error():
    with pytest.raises(ConfigError, match=r"augment\.crop_padding"):
        AugmentConfig(crop_padding=-1)
