"""scripts/subject_l1.py: per-volume reconstruction L1 over the foreground, against a direct computation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import phantom, save_nifti

from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.slicing import extract_slices, normalise, slice_indices, slice_positions

REPO = Path(__file__).resolve().parents[1]


def test_subject_l1_counts_the_brain_only_and_prints_the_tissue_spread(tmp_path, weights_dir):
    volume = phantom((24, 24, 24), seed=3)
    path = save_nifti(tmp_path / "subject.nii.gz", volume)
    command = [
        sys.executable,
        REPO / "scripts" / "subject_l1.py",
        weights_dir / "brain",
        path,
        "--slice-stride",
        "4",
    ]
    table = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    row = [c.strip() for c in table.strip().splitlines()[-1].strip("|").split("|")]

    detector = VQVAEDetector.load(weights_dir / "brain", torch.device("cpu"))
    region = detector.region
    indices = slice_indices(volume, region, 4)
    x = extract_slices(normalise(volume, region), region, indices)  # (S, 1, size, size)
    inside = extract_slices(volume > 0, region, indices).numpy() > 0.5
    assert 0 < inside.mean() < 1  # the phantom has a background, so the two L1 differ
    position = slice_positions(indices, volume.shape[region.slice_axis])
    with torch.no_grad():
        error = (detector.vqvae.decode(detector.vqvae.encode(x, position), position) - x).abs()
    error = error.numpy()
    tissue = x.numpy()[inside]
    assert row[0] == "subject.nii.gz" and row[1] == str(len(indices))
    assert float(row[2]) == round(float(error[inside].mean()), 3)
    assert float(row[3]) == round(float(error.mean()), 3)
    assert float(row[4]) == round(float(np.abs(tissue - tissue.mean()).mean()), 3)
