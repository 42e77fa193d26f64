"""Lesion cases: tiny .mrc and .nrrd files of our own through the builder, geometry, labels and layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mood_vqad.data.lesions import build_lesions
from mood_vqad.data.sources import LESIONS, PACKAGES, SOURCES, Lesion, Member
from mood_vqad.io import save_volume

UP_FIRST = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)  # index i runs upwards, j leftwards, k backwards


def _write(path: Path, array: np.ndarray, spacing: tuple[float, ...] | None = None) -> Path:
    """A (k, j, i) array as an image file SimpleITK's writer picks by suffix (.mrc: no spacing kept)."""
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def lesion_files(tmp_path: Path) -> tuple[list[Lesion], dict[Member, Path]]:
    """A LiTS-like .mrc pair (tumour label 2 at the top, fixed geometry) and a lung-like .nrrd pair."""
    hu = np.full((20, 20, 20), 50.0, dtype=np.float32)  # (k, j, i) soft tissue
    labels = np.ones(hu.shape, dtype=np.uint16)
    labels[8:12, 8:12, 14:19] = 2  # a tumour at high i: the top of the body with UP_FIRST
    hu[labels == 2] = 150.0
    chest = np.full((8, 24, 24), -1000.0, dtype=np.float32)
    chest[:, 4:20, 4:20] = 40.0
    lung_label = np.zeros(chest.shape, dtype=np.int16)
    lung_label[3:5, 10:14, 10:14] = 1
    paths = {
        "img": _write(tmp_path / "img.mrc", hu),
        "lab": _write(tmp_path / "lab.mrc", labels),
        "chest": _write(tmp_path / "chest.nrrd", chest.astype(np.int16), (1.0, 1.0, 5.0)),
        "chest_label": _write(tmp_path / "chest_label.nrrd", lung_label, (1.0, 1.0, 5.0)),
    }
    members = {name: Member("pkg", path.name, "0" * 64) for name, path in paths.items()}
    lesions = [
        Lesion("liver", "liver_tumour", members["img"], members["lab"], (2,), "", (2.0, 1.0, 1.0), UP_FIRST),
        Lesion("lung", "lung_tumour", members["chest"], members["chest_label"], (1,), ""),
    ]
    return lesions, {members[name]: path for name, path in paths.items()}


def test_lesion_table_is_consistent_and_kept_out_of_the_normal_sources():
    for lesion in LESIONS.values():
        for member in (lesion.image, lesion.label):
            assert member.package in PACKAGES and re.fullmatch("[0-9a-f]{64}", member.sha256)
    normal = {m.path for s in SOURCES.values() for m in (s.image, s.mask) if m is not None}
    assert not normal & {m.path for x in LESIONS.values() for m in (x.image, x.label)}


def test_builder_writes_labelled_cases_in_the_toy_layout(lesion_files, tmp_path):
    lesions, files = lesion_files
    normals = tmp_path / "normals"
    normals.mkdir()
    save_volume(normals / "normal.nii.gz", np.full((16, 16, 16), 0.5, dtype=np.float32), np.eye(4))
    out = tmp_path / "out"
    types = build_lesions(files, out, 16, lesions, normal_dir=normals, progress=False)
    assert types == {"liver.nii.gz": ["liver_tumour"], "lung.nii.gz": ["lung_tumour"], "normal.nii.gz": []}
    assert json.loads((out / "toy_label" / "anomaly_types.json").read_text()) == types
    labels = {n: (out / "toy_label" / "sample" / f"{n}.txt").read_text() for n in types}
    assert labels == {"liver.nii.gz": "1\n", "lung.nii.gz": "1\n", "normal.nii.gz": "0\n"}
    assert not np.asarray(nib.load(str(out / "toy_label" / "pixel" / "normal.nii.gz")).dataobj).any()

    case = nib.load(str(out / "toy" / "liver.nii.gz"))
    volume = np.asarray(case.dataobj)
    mask = np.asarray(nib.load(str(out / "toy_label" / "pixel" / "liver.nii.gz")).dataobj)
    assert volume.shape == mask.shape == (16, 16, 16) and mask.dtype == np.uint8
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    # the recorded spacing replaces the header's 1 mm: 20 voxels of 2 mm along i, which runs upwards (z)
    assert np.allclose(case.header.get_zooms(), (20 / 16, 20 / 16, 40 / 16))
    assert np.argwhere(mask).mean(axis=0)[2] > 11  # the tumour is at the top
    # the CT window [-200, 300] HU onto [0, 1]: tissue 50 HU -> 0.5, tumour 150 HU -> 0.7 (blurred at its rim)
    assert 0.6 < volume[mask > 0].mean() <= 0.7
    assert np.median(volume[mask == 0]) == pytest.approx(0.5, abs=0.01)
    lung = np.asarray(nib.load(str(out / "toy_label" / "pixel" / "lung.nii.gz")).dataobj)
    assert 0 < lung.sum() < 16**3 // 20


def test_a_tumour_that_vanishes_at_the_size_is_left_out(lesion_files, tmp_path):
    lesions, files = lesion_files
    types = build_lesions(files, tmp_path / "out", 8, lesions[1:], progress=False)
    assert types == {}
    assert not any((tmp_path / "out" / "toy").iterdir())
