"""The command line end to end in a subprocess, as a user runs it; outputs read as the challenge does."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom, run_cli, save_nifti, unwritable_dir

from mood_vqad.predict import detect_region

CASES = {"a.nii.gz": (32, 32, 32), "b.nii.gz": (32, 40, 32), "c.nii.gz": (64, 64, 64)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    for i, (name, shape) in enumerate(CASES.items()):
        volume = phantom(shape, seed=i)
        volume[10:16, 10:16, 12:18] = 1.0  # a bright block: something to find
        save_nifti(folder / name, volume)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b truncated")
    return folder


@pytest.fixture(scope="module")
def predicted(cases, weights_dir, tmp_path_factory) -> dict:
    runs = {}
    for task in ("sample", "pixel"):
        out = tmp_path_factory.mktemp(task)
        runs[task] = (out, run_cli("predict", task, cases, out, "--weights", weights_dir, "--seed", "3"))
    return runs


@pytest.mark.parametrize("task", ["sample", "pixel"])
def test_broken_case_is_reported_and_the_others_written(predicted, task):
    out, result = predicted[task]
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[0].startswith("ERROR: broken.nii.gz: unreadable NIfTI")
    assert "1 of 4 cases failed" in errors[-1] and len(errors) == 2
    suffix = ".txt" if task == "sample" else ""
    assert sorted(os.listdir(out)) == sorted(name + suffix for name in CASES)


def test_sample_files_hold_one_float_in_unit_interval(predicted):
    out, _ = predicted["sample"]
    for name in CASES:
        lines = (out / f"{name}.txt").read_text().splitlines()
        assert len(lines) == 1 and 0.0 <= float(lines[0]) <= 1.0


def test_pixel_maps_match_input_shape_and_read_as_float16_in_unit_interval(predicted):
    out, _ = predicted["pixel"]
    for name, shape in CASES.items():
        scores = np.asarray(nib.load(str(out / name)).dataobj).astype(np.float16)
        assert scores.shape == shape
        assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() < 1
        assert len(np.unique(scores)) > 100, "scores should stay spread after the float16 reading"


def test_same_seed_gives_identical_outputs(cases, weights_dir, predicted, tmp_path):
    result = run_cli("predict", "pixel", cases, tmp_path, "--weights", weights_dir, "--seed", "3")
    assert result.returncode == 1
    first = predicted["pixel"][0]
    for name in CASES:
        assert np.array_equal(
            nib.load(str(tmp_path / name)).get_fdata(), nib.load(str(first / name)).get_fdata()
        )


def test_options_change_the_restoration(cases, weights_dir, predicted, tmp_path):
    result = run_cli(
        "predict", "pixel", cases, tmp_path, "--weights", weights_dir, "--seed", "3",
        "--masking", "static", "--neighbour-rule", "on", "--restorations", "2", "--slice-stride", "1",
    )  # fmt: skip
    assert result.returncode == 1
    first = predicted["pixel"][0]
    assert not np.array_equal(
        nib.load(str(tmp_path / "c.nii.gz")).get_fdata(), nib.load(str(first / "c.nii.gz")).get_fdata()
    )


def test_folder_errors_exit_non_zero_with_one_line(cases, weights_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        ((empty, tmp_path), f"ERROR: {empty.name}: input folder holds no files"),
        ((cases, tmp_path / "missing"), "ERROR: missing: output folder does not exist"),
        ((cases, unwritable_dir(tmp_path)), "output folder is not writable"),
    ]:
        result = run_cli("predict", "sample", *args, "--weights", weights_dir)
        assert result.returncode == 1 and message in result.stderr.strip().splitlines()[-1]


def test_missing_region_weights_fail_each_case_with_one_line(cases, weights_dir, tmp_path):
    result = run_cli(
        "predict", "sample", cases, tmp_path, "--weights", tmp_path / "none", "--region", "abdom"
    )
    assert result.returncode == 1
    assert "ERROR: a.nii.gz: no usable abdom weights:" in result.stderr
    assert "all 4 cases failed; nothing was written" in result.stderr


def test_continue_skips_written_cases(cases, weights_dir, predicted):
    out, _ = predicted["sample"]
    before = {name: (out / f"{name}.txt").stat().st_mtime_ns for name in CASES}
    result = run_cli("predict", "sample", cases, out, "--weights", weights_dir, "--continue")
    assert result.returncode == 1
    assert before == {name: (out / f"{name}.txt").stat().st_mtime_ns for name in CASES}


def test_a_failed_background_write_is_reported_for_its_case_and_the_others_go_on(
    cases, weights_dir, tmp_path
):
    (tmp_path / "b.nii.gz").mkdir()  # the rename onto b's output fails in the writer thread
    result = run_cli("-v", "predict", "pixel", cases, tmp_path, "--weights", weights_dir, "--region", "brain")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    b_error, broken_error = sorted(errors[:2])  # b's write fails after broken's read (one case behind)
    assert b_error.startswith("ERROR: b.nii.gz: failed (IsADirectoryError: [Errno 21] Is a directory")
    assert broken_error.startswith("ERROR: broken.nii.gz: unreadable NIfTI")  # read in the background
    assert "2 of 4 cases failed" in errors[2] and len(errors) == 3
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]  # no temporary left
    assert (tmp_path / "b.nii.gz").is_dir() and nib.load(str(tmp_path / "c.nii.gz")).shape == CASES[
        "c.nii.gz"
    ]
    assert "gzip: " in result.stderr  # -v says which gzip ran


def test_region_is_worked_out_from_the_size():
    assert detect_region((256, 256, 256), "auto") == "brain"
    assert detect_region((512, 512, 512), "auto") == "abdom"
    assert detect_region((512, 512, 512), "brain") == "brain"


def test_help_documents_defaults():
    result = run_cli("predict", "-h")
    assert result.returncode == 0 and "--slice-stride" in result.stdout and "(default: auto)" in result.stdout
