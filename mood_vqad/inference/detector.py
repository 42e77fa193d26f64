"""The VQ-VAE family's detector: sample score (likelihood) and pixel map (restoration) of a volume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mood_vqad.config import VQVAE_METHODS, ModelConfig, PredictOptions
from mood_vqad.inference.plausibility import gross_outlier, rank_sample_score
from mood_vqad.inference.protocol import settings_of
from mood_vqad.inference.restore import RestoreRule, batched_nll, restore, restore_naive
from mood_vqad.inference.scores import (
    change_weights,
    likelihood_weights,
    map_sample_score,
    residual_map,
    sample_score,
    squash,
    squash_in_place,
)
from mood_vqad.inference.slicing import (
    ScoredSlices,
    extract_slices,
    foreground_mask,
    in_plane_axes,
    maps_to_volume,
    scored_slices,
    zero_background,
)
from mood_vqad.inference.timing import StageTimer
from mood_vqad.inference.weights import PRIOR_FILE, VQVAE_FILE, Modules, load_weights
from mood_vqad.nets.pixelsnail import PixelSNAIL
from mood_vqad.nets.vqvae import VQVAE


@dataclass(frozen=True)
class Settings:
    """Inference settings of the VQ-VAE methods (`VQVAEDetector.settings_from` fills them)."""

    slice_stride: int
    restorations: int
    rule: RestoreRule
    residual_mask: bool = False  # weigh residuals by the codes restoration changed (scores.change_weights)
    batch_size: int = 256
    seed: int = 0
    progress: bool = False
    method: str = "vqvae-restoration"
    reference: bool = False  # restore with the naive loop (benchmarks and tests compare it with ours)

    def __post_init__(self) -> None:
        if self.method not in VQVAE_METHODS:
            raise ValueError(f"method must be one of {', '.join(VQVAE_METHODS)}; got {self.method!r}")


@dataclass
class Encoded(ScoredSlices):
    """A volume's scored slices and their code grids."""

    codes: torch.Tensor  # (S, h, w)
    inside: torch.Tensor | None = None  # (S, h, w) codes that cover foreground, where the rule needs them


class VQVAEDetector:
    """VQ-VAE + PixelSNAIL of one region, ready to score volumes (implements `protocol.Detector`)."""

    def __init__(self, config: ModelConfig, vqvae: VQVAE, prior: PixelSNAIL, device: torch.device):
        self.config = config
        self.region = config.region
        self.vqvae = vqvae.to(device).eval()
        self.prior = prior.to(device).eval()
        self.device = device
        self.timer = StageTimer()

    @classmethod
    def from_modules(cls, config: ModelConfig, modules: Modules, device: torch.device) -> VQVAEDetector:
        """The detector of a config and its {file: module}, as `load_weights` returns them."""
        return cls(config, modules[VQVAE_FILE], modules[PRIOR_FILE], device)

    @classmethod
    def load(cls, directory: Path, device: torch.device) -> VQVAEDetector:
        """Load a region's weights folder (raises WeightsError)."""
        return cls.from_modules(*load_weights(directory, device), device)

    def settings_from(self, options: PredictOptions) -> Settings:
        """Settings from the options, the region config's value wherever an option is None."""
        r = self.region
        rule = RestoreRule(
            threshold=r.restore_threshold,
            masking=options.masking or r.masking,
            neighbour=r.neighbour_rule if options.neighbour_rule is None else options.neighbour_rule,
            temperature=r.sample_temperature,
        )
        return settings_of(
            Settings,
            options,
            slice_stride=options.slice_stride or r.slice_stride,
            restorations=options.restorations or r.restorations,
            rule=rule,
            residual_mask=r.residual_mask if options.residual_mask is None else options.residual_mask,
        )

    @torch.no_grad()
    def encode(self, volume: np.ndarray, settings: Settings) -> Encoded:
        """Normalise, pick and resize slices, and encode them to code grids."""
        with self.timer("encode"):
            scored = scored_slices(volume, self.region, settings.slice_stride, self.device)
            slices, position, b = scored.slices, scored.position, settings.batch_size
            chunks = range(0, len(slices), b)
            codes = [self.vqvae.encode(slices[s : s + b], position[s : s + b]) for s in chunks]
            empty = torch.zeros(0, *self.config.prior.grid, dtype=torch.long, device=self.device)
            mask = foreground_mask(volume, self.region) if self.region.restore_quantile_foreground else None
            inside = None
            if mask is not None and codes:
                inside = self.covered_codes(mask, scored.indices).to(self.device)
            return Encoded(scored.indices, position, slices, torch.cat(codes) if codes else empty, inside)

    def covered_codes(self, label: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        """Which codes of the slices at indices cover a voxel of label (volume-shaped): (S, h, w) bool."""
        cells = extract_slices(label.astype(np.float32), self.region, indices)  # (S, 1, size, size)
        return F.adaptive_max_pool2d(cells, self.config.prior.grid)[:, 0] > 0

    def code_nll(self, encoded: Encoded, settings: Settings) -> torch.Tensor:
        """Teacher-forced per-code NLL of the encoded slices: (S, h, w); S = 0 without foreground."""
        if len(encoded.indices) == 0:
            return encoded.codes.float()
        with self.timer("likelihood"):
            return batched_nll(self.prior, encoded.codes, encoded.position, settings.batch_size)

    def sample_score(self, volume: np.ndarray, settings: Settings) -> float:
        """The sample task's score in [0, 1): thresholded NLL sum of the volume's codes, squashed, then
        halved, plus 0.5 for a gross outlier (noise-like or constant volume: plausibility.gross_outlier).

        vqvae-rec has no likelihood: its score is a high percentile of its pixel map.
        """
        outlier = gross_outlier(volume, self.region)
        if settings.method == "vqvae-rec":
            return rank_sample_score(map_sample_score(self.pixel_scores(volume, settings)), outlier)
        nll = self.code_nll(self.encode(volume, settings), settings)
        raw = sample_score(nll, self.region.sample_threshold, settings.slice_stride)
        return rank_sample_score(float(squash(raw, self.region.sample_scale)), outlier)

    def volume_rule(
        self, nll: torch.Tensor, rule: RestoreRule, inside: torch.Tensor | None = None
    ) -> RestoreRule:
        """The rule for one volume: its threshold raised to the config's quantile of the volume's own code
        NLL (S, h, w) where one is set, so a subject the prior finds unlikely throughout gets only its
        most unlikely codes restored; the quantile is over the codes inside (S, h, w) bool, if given."""
        q = self.region.restore_quantile
        if q is None:
            return rule
        values = nll[inside] if inside is not None and bool(inside.any()) else nll
        if values.numel() == 0:
            return rule
        threshold = max(rule.threshold, float(torch.quantile(values.float(), q)))
        return dataclasses.replace(rule, threshold=threshold)

    def likelihood(self, encoded: Encoded, settings: Settings) -> tuple[torch.Tensor, RestoreRule]:
        """The per-code NLL of the encoded slices (S, h, w) and the volume's restoration rule."""
        nll = self.code_nll(encoded, settings)
        return nll, self.volume_rule(nll, settings.rule, encoded.inside)

    @torch.no_grad()
    def restorations(
        self,
        encoded: Encoded,
        settings: Settings,
        likelihood: tuple[torch.Tensor, RestoreRule] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restored code grids (S*N, h, w), the N restorations of a slice adjacent, and their positions;
        likelihood is `self.likelihood(encoded, settings)` where the caller already has it."""
        if settings.method == "vqvae-rec":
            return encoded.codes, encoded.position
        n, b = settings.restorations, settings.batch_size
        codes = encoded.codes.repeat_interleave(n, dim=0)  # (S*N, h, w)
        position = encoded.position.repeat_interleave(n)
        generator = torch.Generator().manual_seed(settings.seed)
        uniform = torch.rand(codes.shape[0], codes[0].numel(), generator=generator).to(self.device)
        # the NLL of each slice, computed once, not once per copy
        slice_nll, rule = likelihood if likelihood is not None else self.likelihood(encoded, settings)
        if settings.reference:
            with self.timer("restoration"):
                return restore_naive(self.prior, codes, position, rule, uniform, b), position
        nll = slice_nll.repeat_interleave(n, dim=0)
        with self.timer("restoration"):
            restored = restore(self.prior, codes, position, rule, uniform, b, settings.progress, nll)
        return restored, position

    @torch.no_grad()
    def residuals(self, encoded: Encoded, settings: Settings) -> torch.Tensor:
        """Weighted mean distance between each slice and its restorations: (S, size, size), weighed by
        the codes restoration changed where settings.residual_mask asks for it, and by the codes' NLL
        where the region's nll_weight does (neither for vqvae-rec)."""
        restoring = settings.method != "vqvae-rec"
        likelihood = self.likelihood(encoded, settings) if restoring else None
        restored, position = self.restorations(encoded, settings, likelihood)
        n, b = len(restored) // len(encoded.indices), settings.batch_size
        masked = settings.residual_mask and restoring
        nll_weights = None
        if likelihood is not None and self.region.nll_weight > 0:
            nll, rule = likelihood
            size = encoded.slices.shape[-1]
            nll_weights = likelihood_weights(nll, rule.threshold, size, self.region.nll_weight)
        out = []
        per_chunk = max(1, b // n)  # slices whose N restorations are decoded in one batch
        with self.timer("decode"):
            for s in range(0, len(encoded.indices), per_chunk):
                rows = slice(s * n, (s + per_chunk) * n)
                decoded = self.vqvae.decode(restored[rows], position[rows])  # (s*N, 1, size, size)
                x = encoded.slices[s : s + per_chunk]
                restored_x = decoded.view(len(x), n, *decoded.shape[1:])  # (s, N, 1, size, size)
                residual = residual_map(x, restored_x, self.region.weight_temperature)  # (s, size, size)
                if masked:
                    codes = restored[rows].view(len(x), n, *restored.shape[1:])  # (s, N, h, w)
                    weights = change_weights(
                        encoded.codes[s : s + per_chunk], codes, x.shape[-1], self.region.mask_sigma
                    )
                    floor = self.region.mask_floor
                    residual = residual * (floor + (1 - floor) * weights)
                if nll_weights is not None:
                    residual = residual * nll_weights[s : s + per_chunk]
                out.append(residual)
            return torch.cat(out)

    def filtered_residuals(self, volume: np.ndarray, settings: Settings) -> np.ndarray:
        """The pixel map before squashing: filtered restoration residuals at the volume's shape, averaged
        with those of the left-right mirrored volume where the region asks for it (mirror_average; a
        second raster order for the prior, so not for vqvae-rec)."""
        out = self.view_residuals(volume, settings)
        if self.region.mirror_average and settings.method != "vqvae-rec":
            rows = in_plane_axes(self.region)[0]  # the axis training flips
            mirrored = np.flip(self.view_residuals(np.flip(volume, rows), settings), rows)  # mapped back
            np.add(out, mirrored, out=out)  # in place: out keeps the NIfTI (Fortran) layout
            out *= 0.5
        return out

    def view_residuals(self, volume: np.ndarray, settings: Settings) -> np.ndarray:
        """Filtered restoration residuals of one view of the volume, at its shape."""
        encoded = self.encode(volume, settings)
        if len(encoded.indices) == 0:
            return np.zeros(volume.shape, dtype=np.float32)
        residuals = self.residuals(encoded, settings)
        return maps_to_volume(residuals, encoded.indices, volume, self.region, self.timer)

    def pixel_scores(self, volume: np.ndarray, settings: Settings) -> np.ndarray:
        """The pixel task's map in [0, 1) with the volume's exact shape."""
        residuals = self.filtered_residuals(volume, settings)  # a fresh array: squashed and masked in place
        with self.timer("squash"):
            squash_in_place(residuals, self.region.pixel_scale)
        with self.timer("mask"):
            return zero_background(residuals, volume, self.region)
