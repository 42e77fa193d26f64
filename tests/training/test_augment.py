"""Augmentation contracts: shapes and finite values, reproducible draws, each transform where expected."""

import dataclasses

import torch

from mood_vqad.blur import gaussian_blur
from mood_vqad.training.augment import AugmentConfig, augment

OFF = AugmentConfig(
    elastic_prob=0.0,
    scale=(0.0, 0.0),
    rotation=0.0,
    flip_prob=(0.0, 0.0),
    intensity_prob=0.0,
    blur_prob=0.0,
    noise_prob=0.0,
)


def slices(n: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, 1, 32, 32).cumsum(-1) / 8  # smooth along rows: flips and warps show


def test_shape_finite_and_reproducible_draws_that_differ_per_sample():
    x = slices()
    first = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    again = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == x.dtype and torch.isfinite(first).all()
    assert torch.equal(first, again)
    same = augment(x[:1].expand(4, -1, -1, -1), AugmentConfig(), torch.Generator().manual_seed(2))
    assert not torch.allclose(same[0], same[1]), "every sample should draw its own parameters"


def test_everything_off_is_the_identity():
    x = slices()
    torch.testing.assert_close(augment(x, OFF), x, atol=1e-5, rtol=0)


def test_flips_mirror_the_chosen_axis():
    x = slices()
    rows = augment(x, dataclasses.replace(OFF, flip_prob=(1.0, 0.0)))
    cols = augment(x, dataclasses.replace(OFF, flip_prob=(0.0, 1.0)))
    torch.testing.assert_close(rows, x.flip(-2), atol=1e-5, rtol=0)
    torch.testing.assert_close(cols, x.flip(-1), atol=1e-5, rtol=0)


def test_intensity_noise_and_warps_stay_in_range():
    x = slices(16)
    for change in ({"intensity_prob": 1.0}, {"noise_prob": 1.0}, {"elastic_prob": 1.0}, {"rotation": 5.0}):
        out = augment(x, dataclasses.replace(OFF, **change), torch.Generator().manual_seed(0))
        assert not torch.allclose(out, x), change
        assert (out - x).abs().mean() < 0.5 * x.abs().mean(), f"{change} should perturb, not replace"


def test_blur_keeps_constants_and_a_zero_sigma_changes_nothing():
    flat = torch.full((2, 1, 16, 16), 3.0)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([1.0, 0.5]), radius=3), flat)
    x = slices(2)
    torch.testing.assert_close(gaussian_blur(x, torch.zeros(2), radius=3), x)
    assert not torch.allclose(gaussian_blur(x, torch.ones(2), radius=3), x)
