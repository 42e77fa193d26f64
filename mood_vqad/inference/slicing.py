"""Per-region intensity normalisation, and the passage between volumes and stacks of resized slices.

One code path for prediction and training: `prepare` stores exactly the slices `extract_slices` makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mood_vqad.config import RegionConfig
from mood_vqad.inference.scores import post_filter, subtract_baseline
from mood_vqad.inference.timing import StageTimer

CHUNK = 64  # slices resized at a time, to bound memory on 512^3 volumes


def normalise(volume: np.ndarray, region: RegionConfig) -> np.ndarray:
    """Network-input intensities: brain z-scored on its non-zero voxels, its background at a fixed level
    where the config sets one; abdomen mapped affinely."""
    if region.intensity == "affine":
        return (volume * region.affine_scale + region.affine_offset).astype(np.float32)
    if region.intensity != "zscore":
        raise ValueError(f"unknown intensity normalisation {region.intensity!r}")
    kept = np.where(volume < region.low_cut, 0.0, volume).astype(np.float32)
    foreground = kept[kept > 0]
    if foreground.size == 0:
        return kept
    normalised = (kept - foreground.mean()) / max(float(foreground.std()), 1e-6)
    if region.background is not None:
        normalised[kept == 0] = region.background
    return normalised


def foreground_mask(volume: np.ndarray, region: RegionConfig) -> np.ndarray | None:
    """Voxels that may score above zero (brain: image > 0, as MOOD builds its brain mask); None = all."""
    if region.foreground_threshold is None:
        return None
    return volume > region.foreground_threshold


def zero_background(scores: np.ndarray, volume: np.ndarray, region: RegionConfig) -> np.ndarray:
    """The scores as float32, 0 outside the region's foreground; float32 scores are zeroed in place."""
    scores = scores.astype(np.float32, copy=False)
    mask = foreground_mask(volume, region)
    if mask is not None:
        np.multiply(scores, mask, out=scores)
    return scores


def in_plane_axes(region: RegionConfig) -> tuple[int, int]:
    """The volume's axes within a slice, in the order of the slice's rows and columns."""
    rows, columns = (a for a in range(3) if a != region.slice_axis)
    return rows, columns


def slice_indices(volume: np.ndarray, region: RegionConfig, stride: int) -> np.ndarray:
    """Every stride-th slice along the slice axis that holds foreground (all of them for the abdomen)."""
    indices = np.arange(0, volume.shape[region.slice_axis], stride)
    mask = foreground_mask(volume, region)
    if mask is None:
        return indices
    return indices[mask.any(axis=in_plane_axes(region))[indices]]


def slice_positions(indices: np.ndarray, n_slices: int) -> torch.Tensor:
    """Relative slice positions in [-0.5, 0.5], the extra input of every network: (S,)."""
    return torch.as_tensor(np.asarray(indices) / max(n_slices - 1, 1) - 0.5, dtype=torch.float32)


def extract_slices(normalised: np.ndarray, region: RegionConfig, indices: np.ndarray) -> torch.Tensor:
    """Chosen slices resized to the network's square size: (X, Y, Z) -> (S, 1, size, size) float32."""
    stack = np.moveaxis(normalised, region.slice_axis, 0)[indices]  # (S, X', Y')
    size = (region.slice_size, region.slice_size)
    out = [
        F.interpolate(
            torch.from_numpy(np.ascontiguousarray(stack[s : s + CHUNK])).unsqueeze(1).float(),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for s in range(0, len(stack), CHUNK)
    ]
    return torch.cat(out) if out else torch.zeros(0, 1, *size)


def interpolate_slices(maps: torch.Tensor, indices: np.ndarray, n_slices: int) -> torch.Tensor:
    """Fill every slice by linear interpolation between scored ones: (S, h, w) at indices -> (Z, h, w)."""
    if len(indices) == 1:
        return maps.expand(n_slices, -1, -1).clone()
    z = np.arange(n_slices)
    upper = np.clip(np.searchsorted(indices, z, side="right"), 1, len(indices) - 1)
    lower = upper - 1
    t = np.clip((z - indices[lower]) / (indices[upper] - indices[lower]), 0.0, 1.0)
    t = torch.as_tensor(t, dtype=maps.dtype, device=maps.device).view(-1, 1, 1)
    return maps[torch.as_tensor(lower)] * (1 - t) + maps[torch.as_tensor(upper)] * t


def slices_to_volume(stack: np.ndarray, shape: tuple[int, ...], region: RegionConfig) -> np.ndarray:
    """Resize every slice back to the input's in-plane size and restore axis order: (Z, h, w) -> shape.

    The volume is laid out as NIfTI stores voxels (Fortran order), so that writing it is a plain copy.
    """
    in_plane = tuple(shape[a] for a in in_plane_axes(region))
    out = np.empty(shape, dtype=np.float32, order="F")
    planes = np.moveaxis(out, region.slice_axis, 0)  # (Z, X', Y') view of out
    for s in range(0, len(stack), CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(stack[s : s + CHUNK])).unsqueeze(1)
        planes[s : s + CHUNK] = F.interpolate(chunk, size=in_plane, mode="bilinear", align_corners=False)[
            :, 0
        ]
    return out


@dataclass
class ScoredSlices:
    """A volume's scored slices: their indices along the slice axis, positions and network inputs."""

    indices: np.ndarray  # (S,)
    position: torch.Tensor  # (S,)
    slices: torch.Tensor  # (S, 1, size, size)


def scored_slices(
    volume: np.ndarray, region: RegionConfig, stride: int, device: torch.device
) -> ScoredSlices:
    """Normalise the volume, pick every stride-th slice with foreground and resize it for the networks."""
    indices = slice_indices(volume, region, stride)
    slices = extract_slices(normalise(volume, region), region, indices).to(device)
    position = slice_positions(indices, volume.shape[region.slice_axis]).to(device)
    return ScoredSlices(indices, position, slices)


def foreground_stack(volume: np.ndarray, region: RegionConfig) -> np.ndarray | None:
    """The foreground as a soft mask of the slice stack (Z, size, size), every slice resized as the
    networks' inputs are; None where the region keeps every voxel."""
    mask = foreground_mask(volume, region)
    if mask is None:
        return None
    every_slice = np.arange(volume.shape[region.slice_axis])
    # the boolean mask goes in as it is: extract_slices converts a chunk at a time, no float copy of it
    return extract_slices(mask, region, every_slice)[:, 0].numpy()


def maps_to_volume(
    maps: torch.Tensor,
    indices: np.ndarray,
    volume: np.ndarray,
    region: RegionConfig,
    timer: StageTimer | None = None,
) -> np.ndarray:
    """Maps of the scored slices (S, size, size) at the volume's shape: interpolated between them, less
    their baseline, post-filtered and resized back (each a stage of timer)."""
    timer = timer or StageTimer()
    with timer("interpolate"):
        stack = interpolate_slices(maps, indices, volume.shape[region.slice_axis]).float().cpu().numpy()
    with timer("post-filter"):
        baseline = region.baseline_quantile
        foreground = foreground_stack(volume, region) if region.smooth > 0 or baseline is not None else None
        if baseline is not None:
            subtract_baseline(stack, None if foreground is None else foreground > 0.5, baseline)
        stack = post_filter(stack, region.min_filter, region.mean_filter, region.smooth, foreground)
    with timer("resize"):
        return slices_to_volume(stack, volume.shape, region)
