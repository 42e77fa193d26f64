"""Fast gzip (ISA-L) and its fallback write what plain nibabel writes and read what it reads."""

import gzip
import io
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom

from mood_vqad import gzipfile
from mood_vqad.errors import CaseError
from mood_vqad.io import load_volume, round_to_float16, write_pixel_map

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
write_pixel_map(folder / "ours.nii.gz", scores.copy(), np.load(folder / "affine.npy"))
volume, _ = load_volume(folder / "plain.nii.gz")
print(json.dumps({"backend": gzipfile.backend(), "read_equal": bool(np.array_equal(volume, scores))}))
"""


def scores_map(shape=(20, 24, 28)) -> np.ndarray:
    """A pixel map in [0, 1) with a background of zeros, as predict writes one."""
    scores = phantom(shape, seed=4)
    return (scores / (scores.max() + 1.0)).astype(np.float32)


def on_float16_grid(scores: np.ndarray) -> np.ndarray:
    """A copy of scores with the values the challenge reads: float16's, stored as float32."""
    return scores.astype(np.float16).astype(np.float32)


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
    write_pixel_map(tmp_path / "ours.nii.gz", scores.copy(), AFFINE)
    ours = gzip.decompress((tmp_path / "ours.nii.gz").read_bytes())  # Python's gzip: standard gzip
    assert ours == plain_nibabel_bytes(tmp_path / "plain.nii.gz", on_float16_grid(scores))
    assert_scorer_reads(tmp_path / "ours.nii.gz", scores)
    write_pixel_map(tmp_path / "again.nii.gz", scores.copy(), AFFINE)  # no file name or time in the header
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
    assert ours == plain_nibabel_bytes(tmp_path / "rounded.nii.gz", on_float16_grid(scores))
    assert_scorer_reads(tmp_path / "ours.nii.gz", scores)


def test_subprocess_uses_isal_when_installed(tmp_path):
    pytest.importorskip("isal")
    assert round_trip(tmp_path, hide_isal=False) == {"backend": "isal", "read_equal": True}


@pytest.mark.parametrize("order", ["C", "F"])
def test_rounding_to_float16_is_in_place_and_changes_nothing_the_scorer_reads(order):
    rng = np.random.default_rng(0)
    scores = np.asarray(rng.random((9, 10, 11)), dtype=np.float32, order=order)
    scores[0, 0, :3] = [np.nan, 7e4, -0.25]  # NaN, beyond float16's range, negative: read as before
    original = scores.copy(order=order)
    round_to_float16(scores, block=97)  # blocks that do not divide the size
    with np.errstate(over="ignore"):
        keys = original.astype(np.float16)
    assert np.array_equal(scores.astype(np.float16), keys, equal_nan=True)
    assert np.array_equal(scores, keys.astype(np.float32), equal_nan=True)
    assert not np.array_equal(scores, original, equal_nan=True)
    with pytest.raises(ValueError, match="contiguous"):
        round_to_float16(scores[:, ::2])


def test_rounding_to_float16_breaks_ties_as_numpy_does():
    grid = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)  # every float16 value
    grid = grid[np.isfinite(grid)]
    halfway = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)
    values = np.concatenate([halfway, np.nextafter(halfway, np.inf), np.nextafter(halfway, -np.inf)])
    values = np.concatenate([values, [65519.0, 65520.0, 1e-8, -3e-8, 2.0**-25, 2.0**-24]]).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).astype(np.float32)
    round_to_float16(values)
    assert np.array_equal(values, expected)


def test_rounded_map_compresses_better(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.random((32, 32, 32)).astype(np.float32)  # full-precision noise, like a residual map
    plain_nibabel_bytes(tmp_path / "plain.nii.gz", scores)
    write_pixel_map(tmp_path / "ours.nii.gz", scores.copy(), AFFINE)
    assert (tmp_path / "ours.nii.gz").stat().st_size < 0.8 * (tmp_path / "plain.nii.gz").stat().st_size


def test_forward_seeking_writer_pads_with_zeros_and_refuses_to_go_back():
    sink = io.BytesIO()
    stream = gzipfile.ForwardSeeking(sink)
    stream.write(b"ab")
    assert stream.seek(0, io.SEEK_CUR) == 2
    assert stream.seek(5) == 5  # nibabel's seek to the data offset: zeros in between
    stream.write(np.arange(2, dtype=np.uint8))  # any buffer
    assert sink.getvalue() == b"ab\0\0\0\0\x01" and stream.tell() == 7
    with pytest.raises(io.UnsupportedOperation, match="forwards only"):
        stream.seek(3)


def test_forward_seeking_reader_skips_forwards_and_stops_at_the_end():
    stream = gzipfile.ForwardSeeking(io.BufferedReader(io.BytesIO(bytes(range(10)))))
    assert stream.peek(2)[:2] == b"\0\1" and stream.tell() == 0
    assert stream.read(2) == b"\0\1"
    assert stream.seek(5) == 5  # nibabel's seek to the data offset: bytes in between skipped
    buffer = bytearray(3)
    assert stream.readinto(buffer) == 3 and buffer == b"\5\6\7"
    with pytest.raises(io.UnsupportedOperation, match="forwards only"):
        stream.seek(1)
    assert stream.seek(50) == 10 and stream.read() == b""


def test_fast_reader_reports_a_truncated_file(tmp_path):
    plain_nibabel_bytes(tmp_path / "whole.nii.gz", scores_map())
    data = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match="cut.nii.gz.*unreadable NIfTI"):
        load_volume(tmp_path / "cut.nii.gz")
