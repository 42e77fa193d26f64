"""`mood-vqad data toy`: toy sets in the MOOD challenge's layout, built from held-out normal volumes
(or, with split "train", from the training volumes: the in-distribution check).

    OUT/toy/toy_0.nii.gz ...                    cases (float32, the normal volume's affine)
    OUT/toy_label/pixel/toy_0.nii.gz ...        uint8 masks, 1 exactly where a voxel's value was changed
    OUT/toy_label/sample/toy_0.nii.gz.txt ...   one line: 0 (normal) or 1 (anomalous)
    OUT/toy_label/anomaly_types.json            {"toy_0.nii.gz": ["sink", ...], ...}; [] for normal cases

The scorer (MOOD's scripts/evalresults.py) pairs every file of a label folder with the prediction of the same
name, so the label folders hold nothing else. Case i starts from normal volume i mod N, varied by a random
left-right flip (brain only: a flipped abdomen would be situs inversus) and a small gamma and gain change.
The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mood_vqad.config import REGIONS
from mood_vqad.data.anomalies import ANOMALY_TYPES, GENERATORS, foreground, sample_radius
from mood_vqad.data.sources import LESIONS, RETIRED, ROLES, SOURCES
from mood_vqad.io import NIFTI_SUFFIXES, list_cases, load_volume, save_volume, write_atomic

log = logging.getLogger(__name__)

ANOMALY_COUNTS = (1, 2, 3)
ANOMALY_COUNT_WEIGHTS = (0.6, 0.3, 0.1)


def normal_volumes(normal_dir: Path) -> list[Path]:
    """The NIfTI volumes of a folder, sorted by name."""
    volumes = [p for p in list_cases(normal_dir) if p.name.endswith(NIFTI_SUFFIXES)]
    if not volumes:
        raise ValueError(f"{normal_dir} holds no .nii or .nii.gz volume")
    return volumes


def check_split(volumes: list[Path], split: str) -> None:
    """Refuse volumes of a known source whose role is not the split, and the lesion cases (ValueError)."""
    if split not in ROLES:
        raise ValueError(f"split must be one of {', '.join(ROLES)}, got {split!r}")
    for path in volumes:
        name = path.name.split(".")[0]
        if name in LESIONS or name in RETIRED:
            raise ValueError(f"{path}: {name} holds a real tumour, it is no normal volume (data lesions)")
        if name in SOURCES and SOURCES[name].role != split:
            raise ValueError(f"{path}: {name} is a {SOURCES[name].role} source, not {split} (see --split)")


def normal_cases(cases: int, normal_fraction: float, rng: np.random.Generator) -> set[int]:
    """Which case indices stay normal; both kinds are kept whenever 0 < fraction < 1 and cases >= 2."""
    count = round(cases * normal_fraction)
    if 0.0 < normal_fraction < 1.0 and cases >= 2:
        count = min(max(count, 1), cases - 1)
    return {int(i) for i in rng.choice(cases, size=count, replace=False)}


def vary(volume: np.ndarray, affine: np.ndarray, region: str, rng: np.random.Generator) -> np.ndarray:
    """A variant of a normal volume: maybe mirrored left-right (brain), gamma 0.9-1.1, gain 0.95-1.05."""
    if region == "brain" and rng.random() < 0.5:
        left_right = [code in "LR" for code in nib.aff2axcodes(affine)].index(True)
        volume = np.flip(volume, axis=left_right)
    gamma, gain = rng.uniform(0.9, 1.1), rng.uniform(0.95, 1.05)
    # zero stays zero, so the brain mask (volume > 0) and the air are unchanged
    return np.clip(gain * np.power(volume, gamma), 0.0, 1.0).astype(np.float32)


def prepare_layout(out_dir: Path, overwrite: bool) -> tuple[Path, Path, Path]:
    """Create the toy folders (emptied first with overwrite); refuse to mix with an earlier set."""
    toy, pixel, sample = out_dir / "toy", out_dir / "toy_label" / "pixel", out_dir / "toy_label" / "sample"
    stale = [d for d in (out_dir / "toy", out_dir / "toy_label") if d.exists() and any(d.iterdir())]
    if stale and not overwrite:
        raise FileExistsError(f"{stale[0]} is not empty (pass --overwrite to replace the toy set)")
    for folder in stale:
        shutil.rmtree(folder)
    for folder in (toy, pixel, sample):
        folder.mkdir(parents=True, exist_ok=True)
    return toy, pixel, sample


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _donor(
    donors: list[Path], normal: Path, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray | None:
    """Another subject's volume of the same shape for foreign_patch, or None where there is none."""
    others = [p for p in donors if p.resolve() != normal.resolve()]
    if not others:
        return None
    donor = load_volume(others[rng.integers(len(others))])[0]
    return donor if donor.shape == shape else None


def _anomalous(
    volume: np.ndarray,
    region: str,
    rng: np.random.Generator,
    donor: np.ndarray | None,
) -> tuple[np.ndarray, list[str]]:
    """The volume with one to three anomalies, and their type names in the order applied."""
    mask = foreground(volume, region)
    types = [t for t in ANOMALY_TYPES if t != "foreign_patch" or donor is not None]
    names = []
    case = volume
    for _ in range(rng.choice(ANOMALY_COUNTS, p=ANOMALY_COUNT_WEIGHTS)):
        name = str(rng.choice(types))
        generator = partial(GENERATORS[name], other=donor) if name == "foreign_patch" else GENERATORS[name]
        case, _ = generator(case, mask, rng, sample_radius(volume.shape, rng))
        names.append(name)
    return case, names


def toy_stream(seed: int, region: str, split: str) -> list[int]:
    """The seed of a toy set's random stream."""
    # the region (and a train split) enter the seed so that sets built with one seed differ; held-out
    # streams are those of earlier releases
    return [seed, REGIONS.index(region)] + ([ROLES.index(split)] if split != "holdout" else [])


def case_base(
    normal: Path, stream: list[int], i: int, region: str
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Case i's normal volume before its anomalies (varied), its affine, and the case's generator."""
    # one generator per case, so a case does not depend on how many came before it
    rng = np.random.default_rng([*stream, i])
    base, affine = load_volume(normal)
    return vary(base, affine, region, rng), affine, rng


def build_toy(
    normal_dir: Path,
    out_dir: Path,
    cases: int = 8,
    normal_fraction: float = 0.5,
    seed: int = 0,
    region: str = "brain",
    donor_dir: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    split: str = "holdout",
) -> dict[str, list[str]]:
    """Write a toy set into out_dir (layout in the module docstring); returns the anomaly types by case.

    foreign_patch takes its patches from another volume of donor_dir (default: normal_dir) of the same
    shape; where there is none, that type is not drawn. split "train" builds the in-distribution set (the
    method's upper bound) from training volumes, with a random stream of its own.
    """
    if cases < 1 or not 0.0 <= normal_fraction <= 1.0:
        raise ValueError("need cases >= 1 and 0 <= normal_fraction <= 1")
    normals = normal_volumes(Path(normal_dir))
    check_split(normals, split)
    donors = normal_volumes(Path(donor_dir)) if donor_dir else normals
    if len({p.resolve() for p in normals + donors}) < 2:
        log.warning("no second subject: foreign_patch is left out (see --donors)")
    toy, pixel, sample = prepare_layout(Path(out_dir), overwrite)
    stream = toy_stream(seed, region, split)
    keep_normal = normal_cases(cases, normal_fraction, np.random.default_rng(stream))
    types: dict[str, list[str]] = {}
    for i in tqdm(range(cases), desc="toy cases", unit="case", disable=not progress, file=sys.stderr):
        normal = normals[i % len(normals)]
        base, affine, rng = case_base(normal, stream, i, region)
        case, names = base, []
        if i not in keep_normal:
            case, names = _anomalous(base, region, rng, _donor(donors, normal, base.shape, rng))
        name = f"toy_{i}.nii.gz"
        save_volume(toy / name, case, affine)
        save_volume(pixel / name, (case != base).astype(np.uint8), affine)
        write_text(sample / f"{name}.txt", "1\n" if names else "0\n")
        types[name] = names
    write_text(Path(out_dir) / "toy_label" / "anomaly_types.json", json.dumps(types, indent=2) + "\n")
    return types
