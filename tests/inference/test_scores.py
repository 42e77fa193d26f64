"""Scores and the slice/volume round trip."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from mood_vqad.blur import gaussian_blur
from mood_vqad.config import ABDOM, BRAIN
from mood_vqad.inference.scores import (
    change_weights,
    post_filter,
    residual_map,
    restoration_weights,
    sample_score,
    squash,
    subtract_baseline,
)
from mood_vqad.inference.slicing import (
    interpolate_slices,
    maps_to_volume,
    normalise,
    slice_indices,
    slices_to_volume,
)


def test_squash_is_monotone_in_unit_interval():
    values = np.array([0.0, 1e-3, 1.0, 10.0, 1e6])
    mapped = squash(values, 2.0)
    assert mapped[0] == 0 and (np.diff(mapped) > 0).all() and mapped[-1] < 1


def test_sample_score_sums_only_unlikely_codes():
    nll = torch.tensor([[[1.0, 8.0], [7.0, 9.5]]])
    assert sample_score(nll, threshold=7.0, slice_stride=2) == 2 * (8.0 + 9.5)


def test_weights_favour_restorations_close_to_the_input():
    x = torch.zeros(1, 1, 4, 4)
    restored = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 1.0)])[None]  # (1, 2, 1, 4, 4)
    weights = restoration_weights(x, restored, temperature=3.0)
    assert weights[0, 0] > weights[0, 1] and torch.isclose(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(residual_map(x, restored, None), torch.full((1, 4, 4), 0.55))


def test_gaussian_blur_matches_scipy_with_mirrored_borders():
    maps = torch.rand(2, 1, 17, 23, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur(maps, torch.tensor([1.5, 1.0]), radius=5)[:, 0].numpy()
    # scipy's "mirror" reflects about the edge pixel, as torch's "reflect" padding does
    theirs = np.stack(
        [
            ndimage.gaussian_filter(m, s, mode="mirror", radius=5)
            for m, s in zip(maps[:, 0].numpy(), (1.5, 1.0), strict=True)
        ]
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # sigma 0 leaves the up-sampled mask as it is (asserted exactly in the test below)


def test_change_weights_cover_only_the_changed_codes():
    codes = torch.zeros(1, 4, 4, dtype=torch.long)
    restored = codes.repeat(2, 1, 1).unsqueeze(0).clone()  # (1, 2, 4, 4)
    restored[0, 0, 1, 2] = 5  # changed in one restoration of two
    restored[0, :, 3, 0] = 7  # changed in both
    sharp = change_weights(codes, restored, 8, sigma=0.0)  # two pixels per code cell
    expected = torch.zeros(8, 8)
    expected[2:4, 4:6] = 0.5
    expected[6:8, 0:2] = 1.0
    torch.testing.assert_close(sharp[0], expected)
    smooth = change_weights(codes, restored, 32, sigma=0.25)[0]  # 8 pixels per cell, sigma 2 pixels
    assert smooth[0, 31] < 1e-3 < smooth[8, 12] < smooth[8, 16] < smooth[12, 20] <= 0.5
    torch.testing.assert_close(smooth.sum(), torch.tensor(64 * 1.5), rtol=0.02, atol=0)


def test_post_filter_removes_isolated_voxels():
    stack = np.zeros((9, 9, 9), dtype=np.float32)
    stack[4, 4, 4] = 1.0
    stack[:, :3, :3] = 1.0
    out = post_filter(stack, 3, (3, 7, 7))
    assert out[4, 4, 4] < 0.05 and out[4, 0, 0] > 0.1


def test_smooth_is_a_gaussian_relative_to_each_axis_and_off_by_default():
    stack = np.random.default_rng(0).random((16, 32, 48)).astype(np.float32)
    authors = ndimage.uniform_filter(ndimage.minimum_filter(stack, size=3), size=(3, 7, 7))
    np.testing.assert_array_equal(post_filter(stack, 3, (3, 7, 7)), authors)
    expected = ndimage.gaussian_filter(authors, sigma=(0.8, 1.6, 2.4), mode="nearest")
    np.testing.assert_allclose(post_filter(stack, 3, (3, 7, 7), smooth=0.05), expected, rtol=1e-5, atol=1e-6)


def test_smooth_keeps_a_compact_anomaly_above_a_thin_residual_of_the_same_height():
    stack = np.zeros((32, 64, 64), dtype=np.float32)
    stack[4:12, 8:24, 8:24] = 1.0  # an anomaly: several slices and codes
    stack[20, 40, :] = 1.0  # an edge's residual: one slice, one row
    before = post_filter(stack, 1, (1, 1, 1))
    assert before[8, 16, 16] == before[20, 40, 30] == 1.0
    after = post_filter(stack, 1, (1, 1, 1), smooth=0.03)
    assert after[8, 16, 16] > 0.9 and after[20, 40, 30] < 0.2


def test_smooth_counts_the_background_as_zero():
    stack = np.zeros((32, 64, 64), dtype=np.float32)
    foreground = np.zeros_like(stack)
    foreground[:, 16:48, 16:48] = 1.0
    stack[4:12, 24:40, 24:40] = 1.0  # an anomaly well inside the foreground
    stack[20:28, 16:48, 12:20] = 1.0  # a residual across the foreground's edge, as long and as deep
    plain = post_filter(stack, 1, (1, 1, 1), smooth=0.03)
    np.testing.assert_array_equal(post_filter(stack, 1, (1, 1, 1), 0.03, np.ones_like(stack)), plain)
    masked = post_filter(stack, 1, (1, 1, 1), smooth=0.03, foreground=foreground)
    assert masked[8, 32, 32] == pytest.approx(plain[8, 32, 32], rel=1e-3)
    assert masked[24, 32, 16] < 0.7 * plain[24, 32, 16]  # the foreground's first column


@pytest.mark.parametrize("region", [BRAIN, ABDOM], ids=["brain", "abdomen"])
def test_maps_to_volume_smooths_the_brain_with_its_background_as_zero(region):
    region = dataclasses.replace(region, slice_size=16, smooth=0.05, min_filter=1, mean_filter=(1, 1, 1))
    volume = np.zeros((32, 32, 24), dtype=np.float32)
    volume[4:28, 4:28, :] = 1.0  # the brain's foreground: image > 0
    indices = np.arange(0, 24, 4)
    residual = torch.ones(len(indices), 16, 16)  # the same residual everywhere, background included
    out = maps_to_volume(residual, indices, volume, region)
    assert out.shape == volume.shape
    if region.foreground_threshold is None:  # the abdomen keeps every voxel: nothing to average with
        np.testing.assert_allclose(out, 1.0, rtol=1e-5)
    else:
        assert out[16, 16, 12] > 0.95 and out[4, 16, 12] < 0.8 * out[16, 16, 12]


def test_subtract_baseline_takes_the_quantile_over_the_foreground_and_clips_at_zero():
    stack = np.full((4, 8, 8), 5.0, dtype=np.float32)  # the background's residual
    foreground = np.zeros(stack.shape, dtype=bool)
    foreground[:, 2:6, 2:6] = True
    stack[foreground] = 1.0
    stack[1, 3, 3] = 3.0  # an anomaly
    out = subtract_baseline(stack.copy(), foreground, 0.5)
    assert out[1, 3, 3] == 2.0 and out[0, 2, 2] == 0.0 and out[0, 0, 0] == 4.0
    assert subtract_baseline(stack.copy(), None, 0.5).max() == 0.0  # None: the median of every voxel (5)
    empty = subtract_baseline(stack.copy(), np.zeros(stack.shape, dtype=bool), 0.5)
    np.testing.assert_array_equal(empty, stack)


def test_maps_to_volume_takes_out_a_subject_wide_residual():
    region = dataclasses.replace(
        BRAIN, slice_size=16, baseline_quantile=0.5, min_filter=1, mean_filter=(1, 1, 1)
    )
    volume = np.zeros((32, 32, 24), dtype=np.float32)
    volume[4:28, 4:28, :] = 1.0
    indices = np.arange(0, 24, 4)
    anomaly = torch.zeros(len(indices), 16, 16)
    anomaly[2:4, 6:10, 6:10] = 1.0
    # the same anomaly in a subject the decoder fits and in one it fits worse throughout (+0.5 everywhere)
    fitted, worse = (maps_to_volume(anomaly + offset, indices, volume, region) for offset in (0.0, 0.5))
    np.testing.assert_allclose(worse, fitted, atol=1e-5)
    assert fitted[16, 16, 10] == pytest.approx(1.0, abs=1e-5) and fitted[8, 8, 2] == 0.0
    off = dataclasses.replace(region, baseline_quantile=None)
    unchanged = maps_to_volume(anomaly + 0.5, indices, volume, off)
    assert unchanged[8, 8, 2] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="baseline_quantile"):
        dataclasses.replace(region, baseline_quantile=1.0)


def test_brain_normalisation_and_foreground_slices():
    volume = np.zeros((8, 8, 10), dtype=np.float32)
    volume[2:6, 2:6, 3:7] = np.linspace(0.2, 1.0, 64).reshape(4, 4, 4)
    volume[0, 0, 0] = 0.01  # below the low cut: background
    normalised = normalise(volume, BRAIN)
    inside = normalised[volume > 0.05]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-3
    assert slice_indices(volume, BRAIN, 1).tolist() == [0, 3, 4, 5, 6]
    assert slice_indices(volume, ABDOM, 3).tolist() == [0, 3, 6, 9]


def test_fixed_background_leaves_the_tissue_and_levels_every_subject():
    volume = np.zeros((8, 8, 10), dtype=np.float32)
    volume[2:6, 2:6, 3:7] = np.linspace(0.2, 1.0, 64).reshape(4, 4, 4)
    volume[0, 0, 0] = 0.01
    other = np.where(volume > 0.05, np.sqrt(volume), volume)  # another subject's tissue histogram
    tissue = volume > 0.05
    fixed = dataclasses.replace(BRAIN, background=-4.0)
    free = [normalise(v, BRAIN) for v in (volume, other)]
    assert free[0][0, 0, 0] != pytest.approx(free[1][0, 0, 0], abs=0.1)  # -mean / std moves with the subject
    for subject, unfixed in zip((volume, other), free, strict=True):
        level = normalise(subject, fixed)
        np.testing.assert_allclose(level[tissue], unfixed[tissue], rtol=1e-6)
        assert np.all(level[~tissue] == -4.0)


def test_slices_interpolate_and_return_to_the_input_shape():
    maps = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
    filled = interpolate_slices(maps, np.array([2, 6]), 9)
    assert (
        filled[:3].max() == 0 and filled[6:].min() == 1 and torch.isclose(filled[4, 0, 0], torch.tensor(0.5))
    )
    region = dataclasses.replace(BRAIN, slice_axis=1)
    out = slices_to_volume(filled.numpy(), (5, 9, 7), region)
    assert out.shape == (5, 9, 7) and out[:, 8].min() == 1
