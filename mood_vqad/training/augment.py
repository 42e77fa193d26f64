"""Random augmentation of batches of slices, on their device: one resampling for all spatial transforms.

The authors' list (Marimont & Tarroni 2021, MOOD 2020 entry): elastic deformation, scaling by -15..+10 %,
rotation by +-5 degrees, flips, brightness / contrast, blur and noise. Every sample of a batch draws its
own parameters; a probability of 0 switches a transform off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mood_vqad.blur import gaussian_blur


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges and probabilities of the random transforms (intensities in normalised units)."""

    elastic_prob: float = 0.5
    elastic_alpha: float = 0.02  # std of control-point displacements, in units of the half-width
    elastic_grid: int = 6  # control points per side; larger means finer, more local warps
    scale: tuple[float, float] = (-0.15, 0.10)  # relative zoom range
    rotation: float = 5.0  # degrees, either way
    # Per in-plane axis (rows, columns). Only rows by default: with MOOD's slice axis 2, rows run along the
    # volume's first axis, left-right in a RAS-oriented volume; an anterior-posterior flip makes anatomy
    # the predictor never sees. Check against your data's orientation.
    flip_prob: tuple[float, float] = (0.5, 0.0)
    intensity_prob: float = 0.5
    brightness: float = 0.1  # added offset, either way
    contrast: float = 0.1  # gain around the slice mean, 1 +- contrast
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # pixels
    noise_prob: float = 0.2
    noise_std: float = 0.05  # largest std of the added Gaussian noise


def _uniform(
    n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """(n,) draws from U(low, high) on like's device, float32."""
    u = torch.rand(n, generator=generator, device=like.device)
    return low + (high - low) * u


def _chance(n: int, prob: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) float mask: 1 with probability prob."""
    return (torch.rand(n, generator=generator, device=like.device) < prob).float()


def sampling_grid(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Random zoom, rotation, flips and elastic warp as one grid_sample grid: (B, C, H, W) -> (B, H, W, 2)."""
    b, _, h, w = x.shape
    angle = _uniform(b, -config.rotation, config.rotation, x, generator) * (math.pi / 180)
    zoom = 1 + _uniform(b, *config.scale, x, generator)
    # affine_grid maps output to input coordinates: zooming in by s reads the input at coordinates / s.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    rows, cols = (1 - 2 * _chance(b, p, x, generator) for p in config.flip_prob)
    theta = theta * torch.stack([cols, rows, torch.ones_like(rows)], 1)[:, None, :]  # x is columns, y rows
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    n = config.elastic_grid
    control = torch.randn(b, 2, n, n, generator=generator, device=x.device) * config.elastic_alpha
    control = control * _chance(b, config.elastic_prob, x, generator).view(-1, 1, 1, 1)
    warp = F.interpolate(control, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    return grid + warp.permute(0, 2, 3, 1)


@torch.no_grad()
def augment(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """A randomly transformed copy of a batch of one-channel slices: (B, 1, H, W) float -> same.

    Draws come from `generator` (on x's device) or, when None, from the global RNG of x's device.
    """
    b = x.shape[0]
    # Border padding repeats the (background) edge instead of inventing a zero that is not background
    # after the z-score.
    out = F.grid_sample(
        x, sampling_grid(x, config, generator), mode="bilinear", padding_mode="border", align_corners=False
    )
    on = _chance(b, config.intensity_prob, out, generator)
    gain = 1 + on * _uniform(b, -config.contrast, config.contrast, out, generator)
    offset = on * _uniform(b, -config.brightness, config.brightness, out, generator)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * gain.view(-1, 1, 1, 1) + mean + offset.view(-1, 1, 1, 1)
    sigma = _chance(b, config.blur_prob, out, generator) * _uniform(b, *config.blur_sigma, out, generator)
    out = gaussian_blur(out, sigma, radius=math.ceil(3 * config.blur_sigma[1]))
    std = _chance(b, config.noise_prob, out, generator) * _uniform(b, 0.0, config.noise_std, out, generator)
    return out + std.view(-1, 1, 1, 1) * torch.randn(out.shape, generator=generator, device=out.device)
