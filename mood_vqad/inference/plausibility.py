"""Gross out-of-distribution checks on a whole volume: what no normal scan of a region looks like.

A likelihood model can explain away a volume that is nothing like its training data (white noise, a
constant volume or an abdominal CT get codes the brain prior finds ordinary), so the sample score ranks
such volumes above every plausible one (Detector.sample_score). The checks compare the volume with itself
and with facts of the MOOD data, not with calibrated values; every margin is wide (README, Sample score).
"""

from __future__ import annotations

import numpy as np

from mood_vqad.config import RegionConfig

AIR = 0.02  # intensities in [0, 1]: at or below this is background (brain: exactly 0) or air (CT window)
# Share of voxels above AIR. Skull-stripped brains fill 7-13% of the demo cubes (a brain is ~1.3 l of
# MOOD's 16.8 l field of view), an abdominal CT 36-65% (air around the body, lungs and bowel always
# remain); an abdomen given as a brain fills 39%, a brain given as an abdomen 11%, an inverted CT 100%.
BODY_SHARE = {"brain": (0.0, 0.25), "abdom": (0.2, 0.95)}
# Correlation of neighbouring voxels: about 0 for independent noise, 0.7 or more for brain MRI and
# abdominal CT even in 64^3 cubes (0.71-0.98 on the demo data at 64^3-256^3).
MIN_NEIGHBOUR_CORRELATION = 0.3
MIN_SPREAD = 1e-3  # std of the voxels above AIR below this: a constant volume
SAMPLE_SIDE = 64  # in-plane voxels kept per axis for the checks (every k-th row), enough for statistics


def neighbour_correlation(volume: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of voxel pairs adjacent along the first axis, both inside the mask (1 if none)."""
    pairs = mask[1:] & mask[:-1]
    if pairs.sum() < 2:
        return 1.0
    first, second = volume[:-1][pairs].astype(np.float64), volume[1:][pairs].astype(np.float64)
    spread = first.std() * second.std()
    return float(((first - first.mean()) * (second - second.mean())).mean() / spread) if spread > 0 else 1.0


def gross_outlier(volume: np.ndarray, region: RegionConfig) -> str | None:
    """Why a volume is grossly out of distribution for a region (one phrase), or None when plausible."""
    step = tuple(slice(None, None, max(1, n // SAMPLE_SIDE)) for n in volume.shape[1:])
    v = volume[(slice(None), *step)]  # every k-th row and column: the statistics of 512^3 cost little
    mask = v > AIR
    share = float(mask.mean())
    if share == 0.0:
        return "empty: no voxel above background"
    if float(v[mask].std()) < MIN_SPREAD:
        return "constant"
    if neighbour_correlation(v, mask) < MIN_NEIGHBOUR_CORRELATION:
        return "noise-like: neighbouring voxels are unrelated"
    low, high = BODY_SHARE.get(region.name, (0.0, 1.0))
    if not low <= share <= high:
        return f"{share:.0%} of the volume above background, {low:.0%}-{high:.0%} expected for {region.name}"
    return None


def rank_sample_score(score: float, outlier: str | None) -> float:
    """Plausible volumes score in [0, 0.5), gross outliers in [0.5, 1); the order within each is kept."""
    return 0.5 * score + (0.5 if outlier else 0.0)
