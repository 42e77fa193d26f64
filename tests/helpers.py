"""Helpers shared by the tests: tiny model configs, phantom volumes, NIfTI files, the CLI in a subprocess."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mood_vqad.config import ModelConfig, PriorConfig, RegionConfig, VAEConfig, VAEModelConfig, VQVAEConfig
from mood_vqad.data.toy import build_toy
from mood_vqad.inference.slicing import extract_slices
from mood_vqad.inference.weights import Modules, build_modules
from mood_vqad.io import save_volume

TINY_VQVAE = VQVAEConfig(channels=(4, 8, 16), res_blocks=1, num_codes=16, code_dim=8)
TINY_PRIOR = PriorConfig(num_codes=16, grid=(8, 8), channels=16, blocks=2, res_blocks=1, attention_dim=8)


def tiny_config(region: RegionConfig, **changes: object) -> ModelConfig:
    """A model config small enough for CPU tests: 32x32 slices, 8x8 code grids, 16 codes."""
    region = dataclasses.replace(region, slice_size=32, slice_stride=4, restorations=3, **changes)
    return ModelConfig(region=region, vqvae=TINY_VQVAE, prior=TINY_PRIOR)


TINY_VAE = VAEConfig(channels=(4, 8), res_blocks=1, latent_channels=2)


def tiny_vae_config(**changes: object) -> VAEModelConfig:
    """32 x 32 slices, every 4th scored, a two-stage VAE with a 2 x 16 x 16 latent."""
    return VAEModelConfig(
        region=tiny_config(RegionConfig()).region, vae=dataclasses.replace(TINY_VAE, **changes)
    )


def tiny_models(config: ModelConfig | VAEModelConfig, seed: int = 0) -> Modules:
    """Randomly initialised models of a config as {file: module}, in eval mode."""
    torch.manual_seed(seed)
    return {name: module.eval() for name, module in build_modules(config).items()}


def covered(region: RegionConfig, mask: np.ndarray, indices: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """A code covers a voxel of mask if its cell of the resized mask slice holds any of them: (S, h, w)."""
    cells = extract_slices(mask.astype(np.float32), region, indices)  # (S, 1, size, size)
    return cells.unflatten(2, (grid[0], -1)).unflatten(4, (grid[1], -1)).amax((3, 5))[:, 0].numpy() > 0


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth ellipsoid 'organ' in [0, 1] with background exactly 0."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 / r**2 for g, r in zip(grids, (0.8, 0.7, 0.75), strict=True)) < 1
    texture = 0.5 + 0.3 * np.sin(3 * grids[0]) * np.cos(2 * grids[1]) + 0.05 * rng.standard_normal(shape)
    return np.clip(texture, 0.1, 1.0).astype(np.float32) * inside


def phantom_toy_set(root: Path, side: int, spacing: float = 1.0) -> tuple[Path, Path]:
    """Two phantom normals in root/normal and a 6-case brain toy set built from them (seed 3) in root/set."""
    normals = root / "normal"
    normals.mkdir()
    for seed in (1, 2):
        volume = phantom((side, side, side), seed=seed)
        save_volume(normals / f"subject{seed}.nii.gz", volume, np.diag([spacing] * 3 + [1.0]))
    build_toy(normals, root / "set", cases=6, normal_fraction=0.34, seed=3, region="brain", progress=False)
    return normals, root / "set"


def save_nifti(path: Path, data: np.ndarray) -> Path:
    """Write an array as a NIfTI file with an identity affine."""
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return path


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """`python -m mood_vqad --no-progress ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "mood_vqad", "--no-progress", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def cli_flags(values: dict) -> list[str]:
    """{"batch_size": 8} -> ["--batch-size", "8"]."""
    return [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits, but not sysfs)."""
    if os.geteuid() == 0:
        return Path("/sys")
    path = tmp_path / "locked"
    path.mkdir()
    path.chmod(0o555)
    return path
