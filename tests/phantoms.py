"""Small synthetic phantoms that stand in for real anatomy in the tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_phantom(seed: int = 0, shape: tuple[int, int, int] = (48, 48, 48)) -> np.ndarray:
    """An ellipsoid 'brain' with smooth texture in [0.2, 0.9], background exactly 0."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64) - ((np.array(shape) - 1) / 2)[:, None, None, None]
    radii = np.array([0.38, 0.42, 0.34])[:, None, None, None] * np.array(shape)[:, None, None, None]
    inside = ((grid / radii) ** 2).sum(axis=0) <= 1.0
    texture = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return np.where(inside, 0.2 + 0.7 * texture, 0.0).astype(np.float32)
