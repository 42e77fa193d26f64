"""Gaussian smoothing of image batches on their device, shared by training (augmentation) and inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (about 0: unchanged): (B, 1, H, W) -> same."""
    b, _, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.clamp_min(1e-3).view(-1, 1) ** 2))  # (B, K)
    kernel = kernel / kernel.sum(1, keepdim=True)
    # Samples become channels of one image so that each is convolved with its own kernel (groups=B).
    out = x.view(1, b, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(b, 1, 1, -1), groups=b)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(b, 1, -1, 1), groups=b)
    return out.view(b, 1, h, w)
