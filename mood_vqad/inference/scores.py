"""Anomaly scores from the prior's likelihoods and from restorations (Marimont & Tarroni 2021)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mood_vqad.blur import gaussian_blur


def squash(score: np.ndarray | float, scale: float) -> np.ndarray | float:
    """Map a non-negative score monotonically into [0, 1) by s / (s + scale); it never saturates."""
    return score / (score + scale)


def squash_in_place(scores: np.ndarray, scale: float, chunk: int = 1 << 22) -> np.ndarray:
    """squash() over a contiguous float array, overwriting it a chunk at a time (no full-size temporary)."""
    if not (scores.flags.c_contiguous or scores.flags.f_contiguous):
        scores[...] = squash(scores, scale)
        return scores
    flat = scores.reshape(-1, order="F" if scores.flags.f_contiguous else "C")  # a view
    for s in range(0, flat.size, chunk):
        flat[s : s + chunk] = squash(flat[s : s + chunk], scale)
    return scores


def sample_score(nll: torch.Tensor, threshold: float, slice_stride: int) -> float:
    """Sum of the per-code NLL above threshold over scored slices, times the stride (a whole-volume estimate).

    Args:
        nll: (S, h, w) teacher-forced per-code NLL of the scored slices.
    """
    return float((nll * (nll > threshold)).sum()) * slice_stride


def map_sample_score(scores: np.ndarray, percentile: float = 99.9) -> float:
    """A sample score from a pixel map in [0, 1]: its high percentile, so a small bright region counts."""
    return float(np.percentile(scores, percentile))


def restoration_weights(x: torch.Tensor, restored: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Weights over restorations: softmax_j(temperature / mean|x - r_j|), or uniform when None.

    Restorations that drifted far from the input (large mean distance) count less.
    Args:
        x: (S, 1, H, W) input slices; restored: (S, N, 1, H, W) decoded restorations.
    Returns:
        (S, N) weights summing to one per slice.
    """
    s, n = restored.shape[:2]
    if temperature is None:
        return torch.full((s, n), 1.0 / n, dtype=x.dtype, device=x.device)
    distance = (restored - x.unsqueeze(1)).abs().flatten(2).mean(-1)  # (S, N)
    return torch.softmax(temperature / distance.clamp_min(1e-6), dim=1)


def residual_map(x: torch.Tensor, restored: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Weighted mean over restorations of |x - r_j|: (S, 1, H, W), (S, N, 1, H, W) -> (S, H, W)."""
    weights = restoration_weights(x, restored, temperature)  # (S, N)
    residual = (restored - x.unsqueeze(1)).abs()[:, :, 0]  # (S, N, H, W)
    return (weights[:, :, None, None] * residual).sum(1)


def change_weights(codes: torch.Tensor, restored: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Pixel weights from the codes restoration changed: the share of restorations that changed each
    code, up-sampled to the slice and smoothed by a Gaussian of sigma code cells.

    Args:
        codes: (S, h, w) input codes; restored: (S, N, h, w) their restorations.
    Returns:
        (S, size, size) weights in [0, 1].
    """
    changed = (restored != codes.unsqueeze(1)).float().mean(1, keepdim=True)  # (S, 1, h, w)
    upsampled = F.interpolate(changed, size=(size, size), mode="nearest")  # (S, 1, size, size)
    pixels = sigma * size / codes.shape[-1]
    radius = min(math.ceil(3 * pixels), size - 1)  # reflect padding needs radius < size
    if pixels <= 0 or radius < 1:
        return upsampled[:, 0]
    return gaussian_blur(upsampled, torch.full((len(codes),), pixels, device=codes.device), radius)[:, 0]


def likelihood_weights(nll: torch.Tensor, threshold: float, size: int, weight: float) -> torch.Tensor:
    """Pixel weights 1 + weight * (each code's NLL above threshold, in nats), up-sampled bilinearly.

    Args:
        nll: (S, h, w) per-code NLL of the input codes.
    Returns:
        (S, size, size) weights >= 1, equal to 1 wherever the prior finds the codes likely.
    """
    excess = (nll - threshold).clamp_min(0).unsqueeze(1)  # (S, 1, h, w)
    upsampled = F.interpolate(excess, size=(size, size), mode="bilinear", align_corners=False)
    return 1 + weight * upsampled[:, 0]


def subtract_baseline(stack: np.ndarray, foreground: np.ndarray | None, quantile: float) -> np.ndarray:
    """Subtract the quantile of stack over foreground (bool, stack's shape; None: every voxel) from stack,
    in place, and clip at 0: the volume's own baseline residual."""
    values = stack[foreground] if foreground is not None else stack
    if values.size == 0:
        return stack
    np.subtract(stack, np.quantile(values, quantile), out=stack)
    return np.maximum(stack, 0, out=stack)


def post_filter(
    stack: np.ndarray,
    min_size: int,
    mean_size: tuple[int, int, int],
    smooth: float = 0.0,
    foreground: np.ndarray | None = None,
) -> np.ndarray:
    """The authors' smoothing, a min-filter (removes isolated voxels) then a mean filter, and a Gaussian of
    sigma `smooth` times each axis's length (0: none) over the stack (Z, H, W), in which the background
    (1 - foreground, a soft mask of the stack's shape; None: no background) counts as zero."""
    out = ndimage.minimum_filter(stack, size=min_size) if min_size > 1 else stack
    out = ndimage.uniform_filter(out, size=mean_size)
    if smooth <= 0:
        return out
    if foreground is not None:
        # the residual along the foreground's edge (skull-stripping, partial volume) is averaged with the
        # empty background and falls, an anomaly inside keeps its height (EXPERIMENTS.md)
        out = out * foreground
    # relative to each axis, so that one setting means the same at 128^3 and 512^3 volumes
    return ndimage.gaussian_filter(out, sigma=[smooth * n for n in out.shape], mode="nearest")
