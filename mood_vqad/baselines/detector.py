"""The VAE baselines of seed 001 as a detector with the VQ-VAE Detector's interface, and their calibration.

Each predictor's slice maps (`vae_maps`) go through the predictor's own volume pipeline: slices picked
and resized as for the VQ-VAE, maps interpolated between scored slices, post-filtered, resized back,
squashed into [0, 1) by a scale calibrated on held-out normal volumes, and zero outside the foreground.
vae-ensemble averages the squashed maps of its members. Sample scores: vae-elbo-grad scores a volume
by its negative ELBO (summed over scored slices, times the stride), the others by a high percentile of
their pixel map.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mood_vqad.baselines.maps import ENERGY_ALPHA, ENERGY_LAMBDA, ENERGY_STEPS, slice_elbo, slice_map
from mood_vqad.config import VAE_METHODS, VAE_PREDICTORS, VAEModelConfig, save_config
from mood_vqad.inference.scores import map_sample_score, squash
from mood_vqad.inference.slicing import (
    ScoredSlices,
    foreground_mask,
    maps_to_volume,
    scored_slices,
    zero_background,
)
from mood_vqad.inference.timing import StageTimer
from mood_vqad.inference.weights import CONFIG_FILE, load_vae_weights, update_config
from mood_vqad.nets.vae import VAE

log = logging.getLogger(__name__)

DEFAULT_MEMBERS = ("rec", "kl-grad", "combi")  # vae-ensemble's maps unless told otherwise
VOXELS_PER_VOLUME = 200_000  # foreground voxels sampled per held-out volume for each map's percentile


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
    members: tuple[str, ...] = DEFAULT_MEMBERS

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
    def load(cls, directory: Path, device: torch.device) -> VAEDetector:
        """Load a region's VAE weights folder, WEIGHTS/<region>-vae (raises WeightsError)."""
        config, vae = load_vae_weights(directory, device)
        return cls(config, vae, device)

    def settings(
        self,
        slice_stride: int | None = None,
        energy_steps: int | None = None,
        energy_alpha: float | None = None,
        energy_lambda: float | None = None,
        members: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> VAESettings:
        """Settings from the region config and the defaults; arguments that are not None take precedence."""
        given = {
            "energy_steps": energy_steps,
            "energy_alpha": energy_alpha,
            "energy_lambda": energy_lambda,
            "members": tuple(members) if members is not None else None,
        }
        return VAESettings(
            slice_stride=slice_stride or self.region.slice_stride,
            **{k: v for k, v in given.items() if v is not None},
            **kwargs,
        )

    def slices(self, volume: np.ndarray, settings: VAESettings) -> ScoredSlices:
        """Normalise, pick and resize the slices to score, as the VQ-VAE detector does."""
        with self.timer("encode"):
            return scored_slices(volume, self.region, settings.slice_stride, self.device)

    def slice_maps(self, scored: ScoredSlices, predictor: str, settings: VAESettings) -> torch.Tensor:
        """One predictor's raw maps of the scored slices: (S, size, size)."""
        energy = (settings.energy_alpha, settings.energy_lambda, settings.energy_steps)
        with self.timer(predictor):
            return slice_map(self.vae, predictor, scored.slices, scored.position, settings.batch_size, energy)

    def to_volume(self, maps: torch.Tensor, indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Slice maps at the volume's shape: interpolated between slices, post-filtered, resized back."""
        return maps_to_volume(maps, indices, shape, self.region, self.timer)

    def raw_maps(self, volume: np.ndarray, settings: VAESettings) -> dict[str, np.ndarray]:
        """Every predictor the method needs, filtered, at the volume's shape, before squashing."""
        scored = self.slices(volume, settings)
        if len(scored.indices) == 0:
            return {p: np.zeros(volume.shape, dtype=np.float32) for p in settings.predictors}
        return {
            p: self.to_volume(self.slice_maps(scored, p, settings), scored.indices, volume.shape)
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


def foreground_sample(values: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """At most VOXELS_PER_VOLUME values of a map on the foreground (everywhere without a mask)."""
    values = values[mask] if mask is not None else values.ravel()
    if values.size > VOXELS_PER_VOLUME:
        values = rng.choice(values, VOXELS_PER_VOLUME, replace=False)
    return values


def calibrate_vae(
    detector: VAEDetector,
    volumes: list[tuple[str, np.ndarray]],
    settings: VAESettings,
    pixel_percentile: float,
) -> tuple[VAEModelConfig, dict[str, Any]]:
    """Scales from held-out normal volumes: each map's percentile on their foreground, the ELBO's median.

    Returns the calibrated config and a report (the values and each volume's raw ELBO).
    """
    if not volumes:
        raise ValueError("no held-out volume to calibrate on")
    rng = np.random.default_rng(settings.seed)
    every = dataclasses.replace(settings, method="vae-ensemble", members=VAE_PREDICTORS)
    samples: dict[str, list[np.ndarray]] = {p: [] for p in VAE_PREDICTORS}
    elbo = {}
    for name, volume in volumes:
        mask = foreground_mask(volume, detector.region)
        for predictor, values in detector.raw_maps(volume, every).items():
            samples[predictor].append(foreground_sample(values, mask, rng))
        elbo[name] = detector.raw_elbo(volume, settings)
    values = {}
    for predictor, parts in samples.items():
        percentile = float(np.percentile(np.concatenate(parts), pixel_percentile))
        values[scale_name(predictor)] = percentile if percentile > 0 else 1.0
    median = float(np.median(list(elbo.values())))
    values["elbo"] = median if median > 0 else 1.0
    scales = dataclasses.replace(detector.config.scales, **values, calibrated=True)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "volumes": list(elbo),
        "percentiles": {"pixel": pixel_percentile},
        "energy": {
            "steps": settings.energy_steps,
            "alpha": settings.energy_alpha,
            "lambda": settings.energy_lambda,
        },
        "values": values,
        "raw_elbo": elbo,
    }
    return dataclasses.replace(detector.config, scales=scales), report


def save_calibrated(source: Path, config: VAEModelConfig, is_run: bool) -> None:
    """Write a calibrated config into a VAE run folder, or into a VAE weights folder with new sums."""
    if is_run:
        save_config(config, Path(source) / CONFIG_FILE)
    else:
        update_config(source, config)
