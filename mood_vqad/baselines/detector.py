"""The VAE baselines (Zhou et al. 2020) as a detector of the `inference.protocol.Detector` kind.

Each predictor's slice maps (`baselines.maps`) go through the predictor's own volume pipeline: slices picked
and resized as for the VQ-VAE, maps interpolated between scored slices, post-filtered, resized back,
squashed into [0, 1) by a scale calibrated on held-out normal volumes, and zero outside the foreground.
vae-ensemble averages the squashed maps of its members. Sample scores: vae-elbo-grad scores a volume
by its negative ELBO (summed over scored slices, times the stride), the others by a high percentile of
their pixel map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mood_vqad.baselines.maps import slice_elbo, slice_map
from mood_vqad.config import (
    ENERGY_ALPHA,
    ENERGY_LAMBDA,
    ENERGY_STEPS,
    VAE_ENSEMBLE,
    VAE_METHODS,
    VAE_PREDICTORS,
    PredictOptions,
    VAEModelConfig,
)
from mood_vqad.inference.protocol import settings_of
from mood_vqad.inference.scores import map_sample_score, squash
from mood_vqad.inference.slicing import ScoredSlices, maps_to_volume, scored_slices, zero_background
from mood_vqad.inference.timing import StageTimer
from mood_vqad.inference.weights import VAE_FILE, Modules, load_weights
from mood_vqad.nets.vae import VAE

log = logging.getLogger(__name__)


def scale_name(predictor: str) -> str:
    """The VAEScales field of a predictor: "elbo-grad" -> "elbo_grad"."""
    return predictor.replace("-", "_")


@dataclass(frozen=True)
class VAESettings:
    """Inference settings of the VAE baselines; the energy options and members apply to their methods."""

    slice_stride: int
    batch_size: int = 256
    seed: int = 0
    progress: bool = False
    method: str = "vae-combi"
    energy_steps: int = ENERGY_STEPS
    energy_alpha: float = ENERGY_ALPHA
    energy_lambda: float = ENERGY_LAMBDA
    members: tuple[str, ...] = VAE_ENSEMBLE

    def __post_init__(self) -> None:
        if self.method not in VAE_METHODS:
            raise ValueError(f"VAE method must be one of {', '.join(VAE_METHODS)}; got {self.method!r}")
        unknown = set(self.members) - set(VAE_PREDICTORS)
        if unknown or not self.members:
            raise ValueError(
                f"ensemble members must be some of {', '.join(VAE_PREDICTORS)}; got {self.members}"
            )
        if self.energy_steps < 0 or self.energy_alpha < 0 or self.energy_lambda < 0:
            raise ValueError("energy steps, alpha and lambda must be >= 0")

    @property
    def predictors(self) -> tuple[str, ...]:
        """The maps the method needs: its own, or the ensemble's members."""
        return self.members if self.method == "vae-ensemble" else (self.method.removeprefix("vae-"),)


class VAEDetector:
    """A region's VAE baseline, ready to score volumes with any of the vae-* methods."""

    def __init__(self, config: VAEModelConfig, vae: VAE, device: torch.device):
        self.config = config
        self.region = config.region
        self.vae = vae.to(device).eval()
        self.device = device
        self.timer = StageTimer()

    @classmethod
    def from_modules(cls, config: VAEModelConfig, modules: Modules, device: torch.device) -> VAEDetector:
        """The detector of a config and its {file: module}, as `load_weights` returns them."""
        return cls(config, modules[VAE_FILE], device)

    @classmethod
    def load(cls, directory: Path, device: torch.device) -> VAEDetector:
        """Load a region's VAE weights folder, WEIGHTS/<region>-vae (raises WeightsError)."""
        return cls.from_modules(*load_weights(directory, device), device)

    def settings_from(self, options: PredictOptions) -> VAESettings:
        """Settings from the options, the region config's slice stride where the option is None."""
        stride = options.slice_stride or self.region.slice_stride
        return settings_of(VAESettings, options, slice_stride=stride, members=tuple(options.members))

    def slices(self, volume: np.ndarray, settings: VAESettings) -> ScoredSlices:
        """Normalise, pick and resize the slices to score, as the VQ-VAE detector does."""
        with self.timer("encode"):
            return scored_slices(volume, self.region, settings.slice_stride, self.device)

    def slice_maps(self, scored: ScoredSlices, predictor: str, settings: VAESettings) -> torch.Tensor:
        """One predictor's raw maps of the scored slices: (S, size, size)."""
        energy = (settings.energy_alpha, settings.energy_lambda, settings.energy_steps)
        with self.timer(predictor):
            return slice_map(self.vae, predictor, scored.slices, scored.position, settings.batch_size, energy)

    def to_volume(self, maps: torch.Tensor, indices: np.ndarray, volume: np.ndarray) -> np.ndarray:
        """Slice maps at the volume's shape: interpolated between slices, post-filtered, resized back."""
        return maps_to_volume(maps, indices, volume, self.region, self.timer)

    def raw_maps(self, volume: np.ndarray, settings: VAESettings) -> dict[str, np.ndarray]:
        """Every predictor the method needs, filtered, at the volume's shape, before squashing."""
        scored = self.slices(volume, settings)
        if len(scored.indices) == 0:
            return {p: np.zeros(volume.shape, dtype=np.float32) for p in settings.predictors}
        return {
            p: self.to_volume(self.slice_maps(scored, p, settings), scored.indices, volume)
            for p in settings.predictors
        }

    def pixel_scores(self, volume: np.ndarray, settings: VAESettings) -> np.ndarray:
        """The pixel task's map in [0, 1) with the volume's exact shape (an ensemble: mean of its members)."""
        raw = self.raw_maps(volume, settings)
        with self.timer("squash"):
            scales = self.config.scales
            scores = sum(squash(m, getattr(scales, scale_name(p))) for p, m in raw.items()) / len(raw)
            return zero_background(scores, volume, self.region)

    def raw_elbo(self, volume: np.ndarray, settings: VAESettings) -> float:
        """The volume's negative ELBO: summed over scored slices, times the stride (0 without foreground)."""
        scored = self.slices(volume, settings)
        with self.timer("elbo"):
            elbo = slice_elbo(self.vae, scored.slices, scored.position, settings.batch_size)
        return float(elbo.sum()) * settings.slice_stride

    def sample_score(self, volume: np.ndarray, settings: VAESettings) -> float:
        """The sample task's score in [0, 1): the squashed negative ELBO (vae-elbo-grad), else the map's."""
        if settings.method == "vae-elbo-grad":
            return float(squash(self.raw_elbo(volume, settings), self.config.scales.elbo))
        return map_sample_score(self.pixel_scores(volume, settings))
