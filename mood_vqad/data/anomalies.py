"""Synthetic local anomalies of the kinds reported in MOOD's hidden test set.

Zimmerer et al., "MOOD 2020: a public benchmark for out-of-distribution detection and localization on
medical images" (IEEE TMI 2022) lists them: uniform-intensity and noise blobs, sink/source deformations,
reflected and shifted patches, and patches interpolated from another subject (Tan et al., "Detecting
outliers with foreign patch interpolation", MELBA 2022).

Every generator takes (volume, mask, rng, size) and returns (new_volume, changed):
- volume: float32 array in [0, 1], never modified; mask: boolean foreground (see `foreground`);
- size: the anomaly's radius in voxels (`sample_radius` draws one scaled to the volume);
- changed: exactly `new_volume != volume`, never empty (another centre is drawn until something changes).
Anomalies are centred on a foreground voxel; blobs and patches only touch foreground voxels, while
deformations move whatever lies in their sphere. Values stay in [0, 1]; randomness comes from `rng` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

MIN_RADIUS = 1.5
MAX_RADIUS_FRACTION = 0.1  # of the smallest side of the field of view
# Windowed CT: 0.02 is HU -190 with the fetch window [-200, 300]; air and lung are 0, fat about 0.2.
BODY_THRESHOLD = 0.02
_TRIES = 100

Box = tuple[slice, slice, slice]


def foreground(volume: np.ndarray, region: str) -> np.ndarray:
    """Where anomalies may be centred: the brain (volume > 0) or the body (volume > BODY_THRESHOLD)."""
    return volume > (0.0 if region == "brain" else BODY_THRESHOLD)


def sample_radius(shape: tuple[int, ...], rng: np.random.Generator) -> float:
    """A radius drawn log-uniformly from 1.5 voxels to 10 % of the smallest side."""
    high = max(MIN_RADIUS, MAX_RADIUS_FRACTION * min(shape))
    return float(np.exp(rng.uniform(math.log(MIN_RADIUS), math.log(high))))


def _centre(mask: np.ndarray, rng: np.random.Generator, margin: int) -> np.ndarray:
    """A foreground voxel at least `margin` voxels from every face of the volume."""
    lo, hi = [], []
    for axis, n in enumerate(mask.shape):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            raise ValueError("the foreground mask is empty")
        lo.append(max(present[0], margin))
        hi.append(min(present[-1], n - 1 - margin))
    if any(a > b for a, b in zip(lo, hi, strict=True)):
        raise ValueError(f"no foreground voxel lies {margin} voxels inside the volume")
    for _ in range(10_000):
        centre = rng.integers(lo, np.array(hi) + 1)
        if mask[tuple(centre)]:
            return centre
    raise ValueError("the foreground is too sparse to place an anomaly")


def _place(mask: np.ndarray, rng: np.random.Generator, radius: float) -> tuple[Box, np.ndarray]:
    """The bounding box of a ball of `radius` around a random foreground centre, and the ball in that box."""
    half = math.ceil(radius)
    centre = _centre(mask, rng, half)
    box = tuple(slice(c - half, c + half + 1) for c in centre)
    offsets = np.arange(-half, half + 1) ** 2
    ball = offsets[:, None, None] + offsets[None, :, None] + offsets[None, None, :] <= radius**2
    return box, ball


def _until_changed(
    volume: np.ndarray, attempt: Callable[[], tuple[Box, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Call attempt() -> (box, new values there) until some voxel changes; return (new_volume, changed)."""
    for _ in range(_TRIES):
        box, patch = attempt()
        patch = np.clip(patch, 0.0, 1.0).astype(volume.dtype)
        diff = patch != volume[box]
        if diff.any():
            new = volume.copy()
            new[box] = patch
            changed = np.zeros(volume.shape, dtype=bool)
            changed[box] = diff
            return new, changed
    raise RuntimeError(f"no voxel changed in {_TRIES} attempts")


def uniform_blob(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ball of one random intensity."""

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        return box, np.where(ball & mask[box], rng.uniform(0.0, 1.0), volume[box])

    return _until_changed(volume, attempt)


def noise_blob(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise (standard deviation 0.05 to 0.3) added inside a ball."""

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        noise = rng.normal(0.0, rng.uniform(0.05, 0.3), ball.shape)
        return box, np.where(ball & mask[box], volume[box] + noise, volume[box])

    return _until_changed(volume, attempt)


def sampling_radius(r: np.ndarray, radius: float, exponent: float, kind: str) -> np.ndarray:
    """Where the voxel at distance r from the centre takes its value from (same direction), for r < radius.

    sink pulls content toward the centre (it samples farther out: rho >= r); source pushes it away
    (rho <= r). Both fix the centre and the sphere's surface, so the deformation is continuous.
    """
    power = 1.0 / exponent if kind == "sink" else exponent
    return radius * np.clip(r / radius, 0.0, 1.0) ** power


def _radial(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """A sink or source deformation inside a ball, resampled with linear interpolation."""

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        half = ball.shape[0] // 2
        offsets = np.indices(ball.shape, dtype=np.float64) - half  # (3, w, w, w), from the centre
        r = np.sqrt((offsets**2).sum(axis=0))
        rho = sampling_radius(r, size, rng.uniform(1.5, 3.0), kind)
        scale = np.divide(rho, r, out=np.ones_like(r), where=ball & (r > 0))
        crop = volume[box]
        warped = ndimage.map_coordinates(crop, half + offsets * scale, order=1, mode="nearest")
        return box, np.where(ball, warped, crop)

    return _until_changed(volume, attempt)


def sink(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Content inside a ball pulled toward its centre."""
    return _radial(volume, mask, rng, size, "sink")


def source(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Content inside a ball pushed away from its centre."""
    return _radial(volume, mask, rng, size, "source")


def reflected_patch(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ball mirrored in place along a random axis."""

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        crop = volume[box]
        return box, np.where(ball & mask[box], np.flip(crop, axis=int(rng.integers(3))), crop)

    return _until_changed(volume, attempt)


def shifted_patch(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ball replaced by the same-sized ball from elsewhere in the foreground of the same volume."""

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        elsewhere, _ = _place(mask, rng, size)
        return box, np.where(ball & mask[box], volume[elsewhere], volume[box])

    return _until_changed(volume, attempt)


def foreign_patch(
    volume: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: float, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A ball interpolated toward the same place in another subject's volume (weight 0.5 to 1)."""
    if other.shape != volume.shape:
        raise ValueError(f"the other volume's shape {other.shape} differs from {volume.shape}")

    def attempt() -> tuple[Box, np.ndarray]:
        box, ball = _place(mask, rng, size)
        weight = rng.uniform(0.5, 1.0)
        blend = (1.0 - weight) * volume[box] + weight * other[box]
        return box, np.where(ball & mask[box], blend, volume[box])

    return _until_changed(volume, attempt)


# foreign_patch also needs `other`: bind it with functools.partial.
GENERATORS = {
    "uniform_blob": uniform_blob,
    "noise_blob": noise_blob,
    "sink": sink,
    "source": source,
    "reflected_patch": reflected_patch,
    "shifted_patch": shifted_patch,
    "foreign_patch": foreign_patch,
}
ANOMALY_TYPES = tuple(GENERATORS)
