"""The no-learning floor: each voxel's robust intensity deviation |x - median| / (1.4826 MAD), as a detector.

A learned map that does not beat this floor has learned nothing an intensity threshold would not find.
Its map goes through the learned maps' own volume pipeline (slices picked and resized to the network's
size, interpolated between scored slices, min and mean filtered, resized back, squashed, zero outside the
foreground), so floor and learned rows differ only in what is mapped. The statistics are per volume, on
the region's foreground (the abdomen, which keeps every voxel, on the body: voxels above the HU window's
floor, 0), and the map is 0 off it: air would otherwise deviate everywhere.

Region settings come from WEIGHTS/<region>/config.json when it is there, so that the floor is filtered
exactly like the learned maps it is reported beside (same slice size, stride, filters, foreground rule),
and from the package defaults otherwise, so that it runs with no weights at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mood_vqad.config import FLOOR_METHODS, REGION_DEFAULTS, PredictOptions, RegionConfig
from mood_vqad.errors import WeightsError
from mood_vqad.inference.protocol import settings_of
from mood_vqad.inference.scores import map_sample_score, squash
from mood_vqad.inference.slicing import (
    extract_slices,
    foreground_mask,
    maps_to_volume,
    slice_indices,
    zero_background,
)
from mood_vqad.inference.timing import StageTimer
from mood_vqad.inference.weights import CONFIG_FILE, read_weights_config

log = logging.getLogger(__name__)

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation
FLOOR_SCALE = 3.0  # squash scale: a deviation of 3 robust standard deviations maps to 0.5


@dataclass(frozen=True)
class FloorSettings:
    """What the floor uses of the prediction settings: the slice stride (and progress, unused)."""

    slice_stride: int
    method: str = FLOOR_METHODS[0]
    progress: bool = False

    def __post_init__(self) -> None:
        if self.method not in FLOOR_METHODS:
            raise ValueError(f"floor method must be one of {', '.join(FLOOR_METHODS)}; got {self.method!r}")
        if self.slice_stride < 1:
            raise ValueError(f"slice stride must be >= 1, got {self.slice_stride}")


def region_config(directory: Path, region: str) -> RegionConfig:
    """The region section of DIRECTORY/config.json, else the package's defaults for the region."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        if region not in REGION_DEFAULTS:
            raise WeightsError(f"{directory}: no {CONFIG_FILE} and no default region named {region!r}")
        log.info("%s: no %s, the floor uses the %s defaults", directory, CONFIG_FILE, region)
        return REGION_DEFAULTS[region]
    return read_weights_config(directory).region


def robust_deviation(volume: np.ndarray, region: RegionConfig) -> np.ndarray:
    """|x - median| / (1.4826 MAD) on the volume's foreground, 0 elsewhere: float32, the volume's shape."""
    mask = foreground_mask(volume, region)
    if mask is None:
        mask = volume > 0  # the body: air (and anything below the HU window) would deviate everywhere
    values = volume[mask]
    if values.size == 0:
        return np.zeros(volume.shape, dtype=np.float32)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * MAD_TO_SD
    return np.where(mask, np.abs(volume - median) / max(mad, 1e-6), 0.0).astype(np.float32)


class IntensityFloor:
    """The intensity floor of one region, with the public methods of the learned detectors."""

    def __init__(self, region: RegionConfig):
        self.region = region
        self.timer = StageTimer()

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> IntensityFloor:
        """The floor with a weights folder's region settings (the folder's name picks the defaults)."""
        return cls(region_config(directory, Path(directory).name))

    def settings_from(self, options: PredictOptions) -> FloorSettings:
        """Settings from the options; the learned detectors' options (restorations...) do not apply."""
        return settings_of(
            FloorSettings, options, slice_stride=options.slice_stride or self.region.slice_stride
        )

    def pixel_scores(self, volume: np.ndarray, settings: FloorSettings) -> np.ndarray:
        """The pixel task's map in [0, 1) with the volume's exact shape."""
        indices = slice_indices(volume, self.region, settings.slice_stride)
        if len(indices) == 0:
            return np.zeros(volume.shape, dtype=np.float32)
        with self.timer("deviation"):
            deviation = robust_deviation(volume, self.region)
            maps = extract_slices(deviation, self.region, indices)[:, 0]  # (S, size, size)
        with self.timer("post-filter"):
            filtered = maps_to_volume(maps, indices, volume, self.region)
            return zero_background(squash(filtered, FLOOR_SCALE), volume, self.region)

    def sample_score(self, volume: np.ndarray, settings: FloorSettings) -> float:
        """The sample task's score in [0, 1): a high percentile of the pixel map, as vqvae-rec scores it."""
        return map_sample_score(self.pixel_scores(volume, settings))
