"""Reconstruction L1 of a weights folder's VQ-VAE per volume, over the foreground and over whole slices.

`reconstruction_l1.py` reads training runs and averages over every pixel of the cached slices, background
included; this reads a shipped weights folder and scores each volume as the predictor sees it (its scored
slices, normalised and resized, fp32), so a subject the decoder fits worse than the others stands out.
Prints a Markdown table.

    PYTHONPATH=. python scripts/subject_l1.py weights/brain ~/.cache/mood-vqad/data/brain-256/*/*.nii.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mood_vqad.config import PredictOptions
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.slicing import extract_slices, foreground_mask
from mood_vqad.io import load_volume

BATCH = 64


@torch.no_grad()
def volume_l1(detector: VQVAEDetector, volume: np.ndarray, stride: int) -> tuple[float, float, float, int]:
    """Mean absolute reconstruction error of the scored slices: (foreground L1, slice L1, foreground's mean
    absolute deviation, slices); the deviation is the L1 of a decoder that returns the tissue's mean."""
    region = detector.region
    encoded = detector.encode(volume, detector.settings_from(PredictOptions(slice_stride=stride)))
    chunks = range(0, len(encoded.indices), BATCH)
    decoded = [
        detector.vqvae.decode(encoded.codes[s : s + BATCH], encoded.position[s : s + BATCH]) for s in chunks
    ]
    error = (torch.cat(decoded) - encoded.slices).abs()[:, 0].numpy()  # (S, size, size)
    mask = foreground_mask(volume, region)
    inside = np.ones(error.shape, dtype=bool)
    if mask is not None:
        inside = extract_slices(mask, region, encoded.indices)[:, 0].numpy() > 0.5
    tissue = encoded.slices[:, 0].numpy()[inside]
    return (
        float(error[inside].mean()),
        float(error.mean()),
        float(np.abs(tissue - tissue.mean()).mean()),
        len(error),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", type=Path, help="a region's weights folder, e.g. weights/brain")
    parser.add_argument("volumes", nargs="+", type=Path, help="NIfTI volumes of that region")
    parser.add_argument("--slice-stride", type=int, default=8)
    args = parser.parse_args()
    detector = VQVAEDetector.load(args.weights, torch.device("cpu"))
    print("| volume | scored slices | foreground L1 | slice L1 | foreground's mean absolute deviation |")
    print("|---|---|---|---|---|")
    for path in args.volumes:
        inside, whole, spread, n = volume_l1(detector, load_volume(path)[0], args.slice_stride)
        print(f"| {path.name} | {n} | {inside:.3f} | {whole:.3f} | {spread:.3f} |")


if __name__ == "__main__":
    main()
