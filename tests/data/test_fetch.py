"""Demo-data fetch: the source table, archive extraction with sums, and the MOOD-like conversions."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mood_vqad.data.fetch import (
    FetchError,
    brain_cube,
    brain_mask,
    ct_cube,
    extract,
    fetch,
    output_sizes,
    remove_retired,
    sha256_of,
)
from mood_vqad.data.sources import PACKAGES, ROLES, SOURCES, Member, default_cache, members_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_source_table_is_consistent():
    for source in SOURCES.values():
        assert source.region in ("brain", "abdom") and source.role in ROLES
        for member in members_of(source):
            assert member.package in PACKAGES
            assert re.fullmatch("[0-9a-f]{64}", member.sha256)
    for region in ("brain", "abdom"):
        roles = {s.role for s in SOURCES.values() if s.region == region}
        assert roles == set(ROLES), f"{region} needs train and holdout sources"
    # split by source: no volume is both trained on and held out
    train = {s.image for s in SOURCES.values() if s.role == "train"}
    assert not train & {s.image for s in SOURCES.values() if s.role == "holdout"}


def test_fetch_removes_what_it_once_wrote_for_a_retired_source(tmp_path):
    for path in ("abdom-128/holdout/lung2.nii.gz", "abdom-128/holdout/dicom_slab.nii.gz"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"volume")
    remove_retired(tmp_path)
    assert [p.name for p in (tmp_path / "abdom-128" / "holdout").iterdir()] == ["dicom_slab.nii.gz"]


def test_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOOD_VQAD_CACHE", str(tmp_path / "c"))
    assert default_cache() == tmp_path / "c"
    monkeypatch.delenv("MOOD_VQAD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache() == tmp_path / "x" / "mood-vqad"


def test_output_sizes_per_region():
    assert output_sizes("brain", ["full", "128", "64", "512"]) == [256, 128, 64]
    assert output_sizes("abdom", ["full", "128", "64"]) == [512, 128, 64]


def test_folder_sum_is_the_sum_of_its_sha256sum_listing(tmp_path):
    (tmp_path / "b").write_bytes(b"second")
    (tmp_path / "a").write_bytes(b"first")
    listing = f"{_sha(b'first')}  a\n{_sha(b'second')}  b\n"
    assert sha256_of(tmp_path) == _sha(listing.encode())


def _deb(path: Path, files: dict[str, bytes]) -> None:
    """A minimal Debian package: an ar archive holding data.tar.xz with './'-prefixed names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buffer.getvalue())]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, data in members:
            f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
            f.write(data + b"\n" * (len(data) % 2))


@pytest.mark.parametrize("kind", ["whl", "tar.gz", "deb"])
def test_extract_checks_the_sum_of_file_and_folder_members(tmp_path, kind):
    files = {"pkg/data/vol.nii.gz": b"volume", "pkg/dicom/1": b"slice1", "pkg/dicom/2": b"slice2", "x": b"x"}
    archive = tmp_path / f"pkg-1.0.{kind}"
    if kind == "whl":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    elif kind == "tar.gz":
        with tarfile.open(archive, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        _deb(archive, files)
    members = tmp_path / "members"
    volume = extract(Member("pkg", "pkg/data/vol.nii.gz", _sha(b"volume")), archive, members)
    assert volume.read_bytes() == b"volume"
    listing = f"{_sha(b'slice1')}  1\n{_sha(b'slice2')}  2\n".encode()
    dicom = extract(Member("pkg", "pkg/dicom", _sha(listing)), archive, members)
    assert sorted(p.name for p in dicom.iterdir()) == ["1", "2"]
    with pytest.raises(FetchError, match="sha256"):
        extract(Member("pkg", "x", "0" * 64), archive, members)
    assert not (members / "pkg" / "x").exists()
    with pytest.raises(FetchError, match="holds no"):
        extract(Member("pkg", "missing", "0" * 64), archive, members)


def _ellipsoid_image(spacing: float, flip_x: bool) -> sitk.Image:
    """A 'brain' (ellipsoid of radii 60/70/50 mm, values 10..110) in a 200 mm box, LPS or RPS axes."""
    n = int(round(200 / spacing))
    grid = (np.indices((n, n, n)) + 0.5) * spacing - 100.0  # (z, y, x) in mm from the centre
    inside = (grid[2] / 60) ** 2 + (grid[1] / 70) ** 2 + (grid[0] / 50) ** 2 <= 1
    values = np.where(inside, 60.0 + 50.0 * np.tanh(grid[2] / 30), 0.0)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing([spacing] * 3)
    image.SetDirection((-1.0 if flip_x else 1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    image.SetOrigin((30.0, -10.0, 5.0))
    return image


def test_brain_cube_is_centred_scaled_and_zero_outside():
    image = _ellipsoid_image(spacing=2.5, flip_x=True)
    volume, affine = brain_cube(image, brain_mask(image, None), size=32)
    assert volume.shape == (32, 32, 32) and volume.dtype == np.float32
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose(np.diag(affine)[:3], 8.0)  # 256 mm over 32 voxels
    brain = volume > 0
    assert volume.max() == 1.0 and volume[brain].min() > 0
    assert abs(brain.sum() * 8.0**3 / 1000 - 4 / 3 * np.pi * 60 * 70 * 50 / 1000) < 0.15 * 880
    assert np.allclose(np.argwhere(brain).mean(axis=0), 15.5, atol=1.0)
    # values rise along the source's index x, which runs toward the right (direction -1 in LPS world);
    # RAS arrays index toward the right too, so they must rise along x there as well
    profile = volume[:, 16, 16]
    inside = np.flatnonzero(profile)
    assert profile[inside[0]] < profile[inside[-1]]


def test_brain_mask_from_another_grid():
    image = _ellipsoid_image(spacing=4.0, flip_x=False)
    head = sitk.Add(image, 5.0)  # no zeros: a head with 'skull' all around
    mask = sitk.GetArrayFromImage(brain_mask(head, _ellipsoid_image(spacing=2.0, flip_x=False))) > 0
    truth = sitk.GetArrayFromImage(image) > 0
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.95


def test_ct_cube_windows_and_keeps_the_whole_field_of_view():
    hu = np.full((10, 20, 40), -1000.0, dtype=np.float32)  # (z, y, x): air
    hu[:, 5:15, 10:30] = 50.0  # soft tissue
    hu[:, 8:12, 18:22] = 1000.0  # bone
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((1.0, 2.0, 5.0))
    volume, affine = ct_cube(image, size=16)
    assert volume.shape == (16, 16, 16)
    assert np.allclose(np.diag(affine)[:3], [40 / 16, 40 / 16, 50 / 16])
    assert volume.min() == 0.0 and 0.8 < volume.max() <= 1.0  # the bone is thin: smoothing lowers it
    assert volume[0, 0, 8] == 0.0  # air is exactly 0
    assert volume[8, 4, 8] == pytest.approx((50 + 200) / 500, abs=0.02)


@pytest.mark.network
def test_fetch_one_small_source_from_the_registry(tmp_path):
    out = tmp_path / "data"
    paths = fetch(tmp_path / "cache", out, sizes=["64"], names=["icbm152"], progress=False)
    assert paths == [out / "brain-64" / "train" / "icbm152.nii.gz"]
    volume = np.asarray(nib.load(str(paths[0])).dataobj)
    assert volume.shape == (64, 64, 64) and volume.max() == 1.0
    again = fetch(tmp_path / "cache", out, sizes=["64"], names=["icbm152"], progress=False)
    assert again == paths
