"""Fast gzip (ISA-L) and its fallback write what plain nibabel writes and read what it reads."""

import gzip
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom

from mood_vqad import gzipfile
from mood_vqad.io import load_volume, write_pixel_map

AFFINE = np.diag([0.7, 0.8, 2.5, 1.0])

# Writes a map and reads a volume through mood_vqad.io in a fresh interpreter; argv: folder, hide isal
ROUND_TRIP = """
import json, sys
from pathlib import Path
if sys.argv[2] == "1":
    sys.modules["isal"] = None  # as if isal were not installed: importing it raises ImportError
import numpy as np
from mood_vqad import gzipfile
from mood_vqad.io import load_volume, write_pixel_map
folder = Path(sys.argv[1])
scores = np.load(folder / "scores.npy")
write_pixel_map(folder / "ours.nii.gz", scores, np.load(folder / "affine.npy"))
volume, _ = load_volume(folder / "plain.nii.gz")
print(json.dumps({"backend": gzipfile.backend(), "read_equal": bool(np.array_equal(volume, scores))}))
"""


def scores_map(shape=(20, 24, 28)) -> np.ndarray:
    """A pixel map in [0, 1) with a background of zeros, as predict writes one."""
    scores = phantom(shape, seed=4)
    return (scores / (scores.max() + 1.0)).astype(np.float32)


def plain_nibabel_bytes(path, scores: np.ndarray) -> bytes:
    """The uncompressed bytes of the file plain nibabel writes for the same map."""
    image = nib.Nifti1Image(scores, AFFINE)
    image.set_data_dtype(np.float32)
    nib.save(image, str(path))
    return gzip.decompress(path.read_bytes())


def assert_scorer_reads(path, scores: np.ndarray) -> None:
    """The challenge's reading: plain nibabel, voxels cast to float16; same shape, affine and values."""
    image = nib.load(str(path))
    assert image.shape == scores.shape and np.allclose(image.affine, AFFINE)
    read = np.asarray(image.dataobj).astype(np.float16)
    assert np.array_equal(read, scores.astype(np.float16))


def round_trip(tmp_path, hide_isal: bool, gzip_env: str | None = None) -> dict:
    """Run ROUND_TRIP in a subprocess with isal hidden or not and MOOD_VQAD_GZIP set or not."""
    scores = scores_map()
    np.save(tmp_path / "scores.npy", scores)
    np.save(tmp_path / "affine.npy", AFFINE)
    plain_nibabel_bytes(tmp_path / "plain.nii.gz", scores)
    env = {k: v for k, v in os.environ.items() if k != "MOOD_VQAD_GZIP"}
    if gzip_env:
        env["MOOD_VQAD_GZIP"] = gzip_env
    command = [sys.executable, "-c", ROUND_TRIP, str(tmp_path), "1" if hide_isal else "0"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    return json.loads(result.stdout)


def test_fast_path_writes_the_bytes_plain_nibabel_writes(tmp_path):
    pytest.importorskip("isal")
    assert gzipfile.backend() == "isal"
    scores = scores_map()
    write_pixel_map(tmp_path / "ours.nii.gz", scores, AFFINE)
    ours = gzip.decompress((tmp_path / "ours.nii.gz").read_bytes())  # Python's gzip: standard gzip
    assert ours == plain_nibabel_bytes(tmp_path / "plain.nii.gz", scores)
    assert_scorer_reads(tmp_path / "ours.nii.gz", scores)
    write_pixel_map(tmp_path / "again.nii.gz", scores, AFFINE)  # no file name or time in the gzip header
    assert (tmp_path / "again.nii.gz").read_bytes() == (tmp_path / "ours.nii.gz").read_bytes()


def test_fast_path_reads_what_plain_nibabel_reads(tmp_path):
    scores = scores_map()
    plain_nibabel_bytes(tmp_path / "plain.nii.gz", scores)
    volume, affine = load_volume(tmp_path / "plain.nii.gz")
    assert np.array_equal(volume, scores) and np.allclose(affine, AFFINE)
    nib.save(nib.Nifti2Image(scores, AFFINE), str(tmp_path / "two.nii.gz"))
    assert np.array_equal(load_volume(tmp_path / "two.nii.gz")[0], scores)


@pytest.mark.parametrize(("hide_isal", "gzip_env"), [(True, None), (False, "python")])
def test_fallback_without_isal_or_when_switched_off(tmp_path, hide_isal, gzip_env):
    found = round_trip(tmp_path, hide_isal, gzip_env)
    assert found == {"backend": "python", "read_equal": True}
    scores = np.load(tmp_path / "scores.npy")
    ours = gzip.decompress((tmp_path / "ours.nii.gz").read_bytes())
    assert ours == gzip.decompress((tmp_path / "plain.nii.gz").read_bytes())
    assert_scorer_reads(tmp_path / "ours.nii.gz", scores)


def test_subprocess_uses_isal_when_installed(tmp_path):
    pytest.importorskip("isal")
    assert round_trip(tmp_path, hide_isal=False) == {"backend": "isal", "read_equal": True}
