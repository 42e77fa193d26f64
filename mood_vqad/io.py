"""Reading cases and writing the challenge's outputs: NIfTI checks, atomic writes, clear per-file errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from mood_vqad import gzipfile

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class UserError(Exception):
    """An error the user can act on: the command line prints its one-line message and exits with 1."""


class CaseError(UserError):
    """A case that cannot be processed; its message is one line naming the file and the cause."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"{Path(path).name}: {cause}")
        self.path = Path(path)
        self.cause = cause


def list_cases(input_dir: Path) -> list[Path]:
    """Every visible regular file of a folder, sorted; non-NIfTI files are kept so they can be reported."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise CaseError(input_dir, "input folder does not exist")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CaseError(input_dir, "input folder holds no files")
    return files


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D NIfTI volume as float32 with its affine; raise CaseError on anything unusable."""
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise CaseError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        data, image = read_nifti(path)
    except Exception as exc:  # nibabel raises many types for truncated or corrupt files
        raise CaseError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CaseError(path, f"expected a 3D volume, got shape {tuple(image.shape)}")
    if min(data.shape) < 2:
        raise CaseError(path, f"volume too small: shape {data.shape}")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise CaseError(path, f"{bad} voxels are NaN or infinite")
    return data, image.affine


def _nifti_class(first_bytes: bytes) -> type[nib.Nifti1Image]:
    """NIfTI-1 or NIfTI-2, from the header's first field (sizeof_hdr: 348 or 540, either byte order)."""
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        size = klass.header_class.sizeof_hdr
        if first_bytes in (size.to_bytes(4, "little"), size.to_bytes(4, "big")):
            return klass
    raise ValueError("not a NIfTI-1 or NIfTI-2 header")


def read_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A NIfTI file's voxels as float32 and its image; .nii.gz decompressed by gzipfile's fast reader."""
    if not path.name.endswith(".gz"):
        image = nib.load(str(path))
        return np.asarray(image.dataobj, dtype=np.float32), image
    with gzipfile.open_read(path) as stream:
        klass = _nifti_class(stream.read(4))
        stream.seek(0)
        image = klass.from_stream(stream)
        return np.asarray(image.dataobj, dtype=np.float32), image


def write_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Save an image as nib.save would, a .nii.gz through gzipfile's fast writer (standard gzip)."""
    if not path.name.endswith(".gz"):
        nib.save(image, str(path))
        return
    with gzipfile.open_write(path) as stream:
        image.to_stream(stream)


def check_output_dir(output_dir: Path) -> None:
    """Fail early, with one line, if the output folder is missing or not writable."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise CaseError(output_dir, "output folder does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CaseError(output_dir, f"output folder is not writable ({exc.strerror})") from exc


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary name in the same folder, then rename it onto path."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes files private (0600); outputs must be readable as a plain file would be.
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_sample_score(path: Path, score: float) -> None:
    """Write the sample task's file: one float on one line."""
    write_atomic(path, lambda tmp: tmp.write_text(f"{float(score):.8f}\n"))


def write_pixel_map(path: Path, scores: np.ndarray, affine: np.ndarray) -> None:
    """Write the pixel task's file: a float32 NIfTI with the input's shape and affine."""
    image = nib.Nifti1Image(np.asarray(scores, dtype=np.float32), affine)
    image.set_data_dtype(np.float32)
    write_atomic(path, lambda tmp: write_nifti(image, tmp))


def save_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Save an array as NIfTI atomically (identity affine by default)."""
    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    write_atomic(path, lambda tmp: write_nifti(image, tmp))
