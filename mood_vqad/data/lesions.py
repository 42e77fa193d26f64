"""`mood-vqad data lesions`: real tumours from public packages as MOOD-like abdominal cases (evaluation only).

    OUT/abdom/toy/lits117.nii.gz ...                   cases, converted as `data fetch` converts abdominal CT
    OUT/abdom/toy_label/pixel/lits117.nii.gz ...       uint8, 1 on the tumour
    OUT/abdom/toy_label/sample/lits117.nii.gz.txt ...  1 (and 0 for the normal volumes of --normals)
    OUT/abdom/toy_label/anomaly_types.json             {"lits117.nii.gz": ["liver_tumour"], ...}

The toy sets' layout, so that `predict`, `evaluate` and scripts/detection_table.py read it unchanged. Without
normal cases every sample label is 1 and sample AP is 1 whatever the scores, hence --normals (held-out
normal volumes, e.g. CACHE/data/abdom-128/holdout). The tumour mask goes onto the cube's grid as brain masks
do: resampled as a fraction, kept where at least half of a voxel is tumour.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from mood_vqad.data.fetch import ct_cube, ct_grid, fetch_members, read_image, resample_mask
from mood_vqad.data.sources import LESIONS, Lesion, Member
from mood_vqad.data.toy import normal_volumes, prepare_layout, write_text
from mood_vqad.errors import FetchError
from mood_vqad.io import load_volume, save_volume

log = logging.getLogger(__name__)


def read_lesion(lesion: Lesion, files: dict[Member, Path]) -> tuple[sitk.Image, sitk.Image]:
    """The lesion's CT and its tumour mask (uint8), with the recorded geometry where the header has none."""
    image = read_image(files[lesion.image])
    labels = sitk.ReadImage(str(files[lesion.label]))
    if labels.GetSize() != image.GetSize():
        raise FetchError(f"{files[lesion.label].name}: shape {labels.GetSize()}, image {image.GetSize()}")
    tumour = sitk.GetImageFromArray(np.isin(sitk.GetArrayFromImage(labels), lesion.tumour).astype(np.uint8))
    tumour.CopyInformation(image)
    for volume in (image, tumour):
        if lesion.spacing is not None:
            volume.SetSpacing(lesion.spacing)
        if lesion.direction is not None:
            volume.SetDirection(lesion.direction)
    return image, tumour


def lesion_cube(
    image: sitk.Image, tumour: sitk.Image, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The case (float32 in [0, 1]), its tumour mask (uint8) on the same size^3 grid, and their affine."""
    volume, affine = ct_cube(image, size)
    centre, spacing = ct_grid(image, size)
    return volume, resample_mask(tumour, centre, spacing, size).astype(np.uint8), affine


def build_lesions(
    files: dict[Member, Path],
    out_dir: Path,
    size: int,
    lesions: Sequence[Lesion] = tuple(LESIONS.values()),
    normal_dir: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Write the lesion cases (and normal_dir's volumes, label 0) into out_dir; returns the types by case."""
    toy, pixel, sample = prepare_layout(Path(out_dir), overwrite)
    types: dict[str, list[str]] = {}
    for lesion in tqdm(lesions, desc="lesions", unit="case", disable=not progress, file=sys.stderr):
        volume, mask, affine = lesion_cube(*read_lesion(lesion, files), size)
        if not mask.any():
            log.warning(
                "%s: the tumour vanishes at %d^3 (skipped; a larger --size keeps it)", lesion.name, size
            )
            continue
        name = f"{lesion.name}.nii.gz"
        save_volume(toy / name, volume, affine)
        save_volume(pixel / name, mask, affine)
        write_text(sample / f"{name}.txt", "1\n")
        types[name] = [lesion.kind]
    for normal in normal_volumes(Path(normal_dir)) if normal_dir else []:
        if normal.name in types:
            raise ValueError(f"{normal}: a normal volume has a lesion case's name")
        volume, affine = load_volume(normal)
        save_volume(toy / normal.name, volume, affine)
        save_volume(pixel / normal.name, np.zeros(volume.shape, dtype=np.uint8), affine)
        write_text(sample / f"{normal.name}.txt", "0\n")
        types[normal.name] = []
    write_text(Path(out_dir) / "toy_label" / "anomaly_types.json", json.dumps(types, indent=2) + "\n")
    return types


def fetch_lesions(cache: Path, out_dir: Path, size: int, **options: object) -> dict[str, list[str]]:
    """Download and verify every lesion's members into the cache, then `build_lesions` (same options)."""
    files = fetch_members([m for x in LESIONS.values() for m in (x.image, x.label)], cache)
    return build_lesions(files, out_dir, size, **options)
