"""Reading cases and writing the challenge's outputs: NIfTI checks, atomic writes, clear per-file errors."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from mood_vqad import gzipfile
from mood_vqad.errors import CaseError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RUN_TMP_PREFIX = ".mood-vqad-tmp."  # docker/predict.sh's temporary folder in OUT, locked by its lock file
RUN_TMP_LOCK = "lock"
TMP_MARK = ".tmp"  # write_atomic's temporary names: .NAME.XXXXXXXX.tmp.nii.gz (or .tmp.txt, .tmp.nii)
STALE_AFTER_S = 10.0  # younger unlocked temporaries may be a writer that has not locked its file yet


def looks_like_case(path: Path) -> bool:
    """A visible entry that is a file, a symbolic link (even a broken one) or is named like a NIfTI file.

    The one rule of what counts as a case, shared by `predict` and the image's output check: every such
    entry is either processed or reported, never skipped in silence.
    """
    if path.name.startswith("."):
        return False
    return path.is_file() or path.is_symlink() or path.name.endswith(NIFTI_SUFFIXES)


def list_cases(input_dir: Path) -> list[Path]:
    """Every entry of a folder that looks like a case, sorted; unusable ones are kept so they are reported."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise CaseError(input_dir, "input folder does not exist")
    files = sorted(p for p in input_dir.iterdir() if looks_like_case(p))
    if not files:
        raise CaseError(input_dir, "input folder holds no files")
    return files


def check_case_file(path: Path) -> None:
    """Raise CaseError unless path is a readable regular file named .nii or .nii.gz."""
    if path.is_symlink() and not path.exists():
        raise CaseError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)")
    if path.is_dir():
        raise CaseError(path, "a folder, not a NIfTI file")
    if not path.is_file():
        raise CaseError(path, "not a regular file")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise CaseError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    if not os.access(path, os.R_OK):
        raise CaseError(path, f"permission denied: not readable by uid {os.geteuid()}")


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Raise CaseError for a header whose affine is not finite or maps the volume onto a plane."""
    if not np.isfinite(affine).all():
        raise CaseError(path, "the header's affine (sform/qform) holds NaN or infinite values")
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise CaseError(path, "the header's affine is singular (a zero voxel size or collinear axes)")


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D NIfTI volume as float32 with its affine; raise CaseError on anything unusable."""
    path = Path(path)
    check_case_file(path)
    try:
        data, image = read_nifti(path)
        check_affine(path, image.affine)
    except CaseError:
        raise
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
        klass = _nifti_class(stream.peek(4)[:4])
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
    """Call write(tmp) on a temporary name in the same folder, then rename it onto path.

    The temporary file is locked while it is written, so that remove_stale_temporaries() of a concurrent
    run leaves it alone; an interrupted write removes it, a killed one leaves it to the next run.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f"{TMP_MARK}{suffix}")
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write(tmp)
        # mkstemp makes files private (0600); outputs must be readable as a plain file would be.
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def is_unlocked(path: Path) -> bool:
    """Whether no live process holds the flock of path (False if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock taken here


def is_stale_temporary(path: Path) -> bool:
    """A temporary of write_atomic or docker/predict.sh whose writer is gone (killed, not stopped)."""
    name = path.name
    if name.startswith(RUN_TMP_PREFIX) and path.is_dir() and not path.is_symlink():
        lock = path / RUN_TMP_LOCK
        return is_unlocked(lock) if lock.exists() else time.time() - path.stat().st_mtime > STALE_AFTER_S
    ours = name.startswith(".") and any(name.endswith(TMP_MARK + s) for s in (*NIFTI_SUFFIXES, ".txt"))
    if not ours or not path.is_file() or path.is_symlink():
        return False
    return time.time() - path.stat().st_mtime > STALE_AFTER_S and is_unlocked(path)


def remove_stale_temporaries(output_dir: Path) -> list[str]:
    """Remove the temporaries an earlier killed run left in output_dir; returns their names."""
    removed = []
    for path in sorted(Path(output_dir).iterdir()):
        try:
            if not is_stale_temporary(path):
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: left as it is
            continue
        removed.append(path.name)
    return removed


def write_sample_score(path: Path, score: float) -> None:
    """Write the sample task's file: one float on one line."""
    write_atomic(path, lambda tmp: tmp.write_text(f"{float(score):.8f}\n"))


def round_to_float16(scores: np.ndarray, block: int = 1 << 22) -> None:
    """Round float32 scores in place, in blocks, to the float16 values the challenge's scorer reads.

    The scorer casts every map to float16 before ranking, so it reads the same values from the rounded
    map; the 13 low mantissa bits become zero and a 512^3 map compresses to about 60 % of its size.
    Torch's conversion (vectorised, threaded) rounds as numpy's does, to nearest even, beyond float16's
    range to infinity, in 0.1 s for 512^3 against numpy's 0.76 s (2 cores).
    """
    if not (scores.flags.c_contiguous or scores.flags.f_contiguous):
        raise ValueError("round_to_float16 needs a contiguous array (a flat view of it)")
    flat = torch.from_numpy(scores.reshape(-1, order="A"))  # a view in memory order, C or Fortran
    for start in range(0, flat.numel(), block):
        part = flat[start : start + block]
        part.copy_(part.half())


def write_pixel_map(path: Path, scores: np.ndarray, affine: np.ndarray) -> None:
    """Write the pixel task's file: a float32 NIfTI with the input's shape and affine, its values rounded
    (in place) to float16's, which the scorer reads unchanged (see round_to_float16)."""
    scores = np.asarray(scores, dtype=np.float32)
    if not (scores.flags.c_contiguous or scores.flags.f_contiguous):
        scores = np.ascontiguousarray(scores)
    round_to_float16(scores)
    image = nib.Nifti1Image(scores, affine)
    image.set_data_dtype(np.float32)
    write_atomic(path, lambda tmp: write_nifti(image, tmp))


def save_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Save an array as NIfTI atomically (identity affine by default)."""
    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    write_atomic(path, lambda tmp: write_nifti(image, tmp))


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict."""
    return json.loads(Path(path).read_text())


def write_json(path: Path, values: dict[str, Any]) -> None:
    """Write a dict as indented JSON, atomically."""
    write_atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(values, indent=2) + "\n"))
