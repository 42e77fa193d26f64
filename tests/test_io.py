"""Bad input gets one clear line naming the file; writes are atomic."""

import gzip
import os

import numpy as np
import pytest
from helpers import phantom, save_nifti, unwritable_dir

from mood_vqad.io import CaseError, check_output_dir, list_cases, load_volume, write_sample_score


def broken_cases(folder):
    """One file for each kind of bad input, named for it."""
    (folder / "notes.txt").write_text("not an image")
    save_nifti(folder / "flat.nii.gz", np.zeros((16, 16), dtype=np.float32))
    save_nifti(folder / "series.nii.gz", np.zeros((8, 8, 8, 3), dtype=np.float32))
    nan = phantom((16, 16, 16))
    nan[3, 3, 3] = np.nan
    save_nifti(folder / "nan.nii.gz", nan)
    whole = save_nifti(folder / "whole.nii.gz", phantom((16, 16, 16))).read_bytes()
    (folder / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    whole_path = folder / "whole.nii.gz"
    whole_path.unlink()
    return {
        "notes.txt": "not a NIfTI file",
        "flat.nii.gz": "expected a 3D volume",
        "series.nii.gz": "expected a 3D volume",
        "nan.nii.gz": "NaN or infinite",
        "truncated.nii.gz": "unreadable NIfTI",
        "garbage.nii.gz": "unreadable NIfTI",
    }


def test_each_bad_file_gets_one_line_naming_it(tmp_path):
    expected = broken_cases(tmp_path)
    for path in list_cases(tmp_path):
        with pytest.raises(CaseError) as info:
            load_volume(path)
        message = str(info.value)
        assert message.startswith(f"{path.name}: ") and expected[path.name] in message and "\n" not in message


def test_good_volume_and_singleton_fourth_axis_load(tmp_path):
    data = phantom((8, 9, 10))
    volume, affine = load_volume(save_nifti(tmp_path / "a.nii.gz", data[..., None]))
    assert volume.shape == (8, 9, 10) and volume.dtype == np.float32 and affine.shape == (4, 4)


def test_folders_are_checked(tmp_path):
    with pytest.raises(CaseError, match="holds no files"):
        list_cases(tmp_path)
    with pytest.raises(CaseError, match="does not exist"):
        list_cases(tmp_path / "missing")
    with pytest.raises(CaseError, match="output folder does not exist"):
        check_output_dir(tmp_path / "missing")
    with pytest.raises(CaseError, match="not writable"):
        check_output_dir(unwritable_dir(tmp_path))


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "x.nii.gz.txt"
    write_sample_score(target, 0.25)
    write_sample_score(target, 0.5)
    assert float(target.read_text()) == 0.5 and os.listdir(tmp_path) == ["x.nii.gz.txt"]


def test_outputs_get_ordinary_file_permissions(tmp_path):
    target = tmp_path / "x.nii.gz.txt"
    write_sample_score(target, 0.25)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
