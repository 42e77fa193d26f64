"""Broken cases, broken folders, bad options and stop signals: every fault is one clear line, never a loss."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import phantom, run_cli, save_nifti

from mood_vqad.predict import PredictOptions, predict_folder


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR")]


def with_affine(path: Path, affine: np.ndarray) -> Path:
    """A phantom whose header's sform rows are the given affine's, written as they are (no qform)."""
    header = nib.Nifti1Header()
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[:3]
    header["sform_code"], header["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(phantom((32, 32, 32)), None, header), str(path))
    return path


@pytest.fixture
def broken_folder(tmp_path) -> Path:
    """One good case among every kind of broken entry that looks like a case."""
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "good.nii.gz", phantom((32, 32, 32)))
    nan = np.eye(4)
    nan[1, 1] = np.nan
    with_affine(folder / "nan_sform.nii.gz", nan)
    with_affine(folder / "singular.nii.gz", np.diag([1.0, 0.0, 1.0, 1.0]))
    (folder / "dangling.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    (folder / "folder.nii.gz").mkdir()
    return folder


def test_every_broken_entry_is_reported_and_the_good_case_written(broken_folder, weights_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("predict", "pixel", broken_folder, out, "--weights", weights_dir)
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    expected = {
        "dangling.nii.gz": "broken symbolic link",
        "folder.nii.gz": "a folder, not a NIfTI file",
        "nan_sform.nii.gz": "affine (sform/qform) holds NaN",
        "singular.nii.gz": "affine is singular",
    }
    for name, cause in expected.items():
        assert any(line.startswith(f"ERROR: {name}: ") and cause in line for line in errors), errors
    assert errors[-1].startswith("ERROR: 4 of 5 cases failed; 1 written")
    assert len(errors) == 5 and "Traceback" not in result.stderr
    assert os.listdir(out) == ["good.nii.gz"]


def test_the_image_output_check_counts_the_same_cases(broken_folder, weights_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run_cli("predict", "sample", broken_folder, out, "--weights", weights_dir)
    check = Path(__file__).resolve().parents[1] / "docker" / "check_outputs.py"
    result = subprocess.run(
        [sys.executable, check, "sample", broken_folder, out], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "4 unreadable case(s) skipped, all 1 others written" in result.stderr
    (out / "good.nii.gz.txt").unlink()
    result = subprocess.run(
        [sys.executable, check, "sample", broken_folder, out], capture_output=True, text=True
    )
    assert result.returncode == 1 and "good.nii.gz: readable, but no output was written" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_case_is_reported(weights_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "locked.nii.gz", phantom((32, 32, 32))).chmod(0)
    result = run_cli("predict", "sample", folder, tmp_path, "--weights", weights_dir)
    assert result.returncode == 1 and "ERROR: locked.nii.gz: permission denied" in result.stderr


def test_an_unexpected_error_fails_one_case_not_the_run(weights_dir, tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        save_nifti(folder / name, phantom((32, 32, 32)))
    options = PredictOptions(masking="bogus", progress=False, device="cpu")  # ValueError inside each case
    with caplog.at_level(logging.DEBUG, logger="mood_vqad"):
        failed = predict_folder("sample", folder, tmp_path, weights_dir, options)
    assert failed == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in errors[:2]] == ["a.nii.gz", "b.nii.gz"]
    assert "failed (ValueError: masking must be" in errors[0].getMessage()
    assert errors[-1].getMessage().startswith("all 2 cases failed; nothing was written")
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records), "-v logs the traceback"


def test_verbose_logs_the_traceback(broken_folder, weights_dir, tmp_path):
    command = [sys.executable, "-m", "mood_vqad", "--no-progress", "-v", "predict", "sample"]
    result = subprocess.run(
        [*command, broken_folder / "..", tmp_path, "--weights", weights_dir], capture_output=True, text=True
    )
    assert "Traceback" not in result.stderr  # the parent holds no case files: one line, no traceback
    result = subprocess.run(
        [*command, broken_folder, tmp_path, "--weights", weights_dir], capture_output=True, text=True
    )
    assert "DEBUG: traceback of nan_sform.nii.gz" in result.stderr and "Traceback" in result.stderr


BAD_OPTIONS = [
    ("predict sample . . --slice-stride -1", "--slice-stride: '-1': expected a whole number >= 1"),
    ("predict pixel . . --restorations 0", "--restorations: '0': expected a whole number >= 1"),
    ("predict pixel . . --batch-size many", "--batch-size: 'many' is not a whole number"),
    ("predict pixel . . --energy-alpha nan", "--energy-alpha: 'nan' is not a finite number"),
    ("predict pixel . . --energy-lambda -1", "--energy-lambda: '-1': expected a number >= 0"),
    ("calibrate . . --sample-percentile 150", "expected a percentile strictly between 0 and 100"),
    ("data toy . . --normal-fraction 1.5", "expected a fraction in [0, 1]"),
    ("train vqvae . . --val-fraction 1", "expected a fraction in [0, 1)"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS)
def test_numeric_options_are_range_checked(args, message):
    result = run_cli(*args.split())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(message), result.stderr


def test_stale_temporaries_of_a_killed_run_are_removed(weights_dir, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    save_nifti(folder / "a.nii.gz", phantom((32, 32, 32)))
    old = time.time() - 3600
    stale_file = out / ".a.nii.gz.txt.k1ll3d00.tmp.txt"
    stale_file.write_text("0.5")
    stale_dir = out / ".mood-vqad-tmp.KILLED"
    stale_dir.mkdir()
    (stale_dir / "lock").touch()
    live_dir = out / ".mood-vqad-tmp.LIVE"  # a concurrent run: its lock is held
    live_dir.mkdir()
    foreign = out / ".notes.txt"
    for path in (stale_file, foreign):
        path.touch()
        os.utime(path, (old, old))
    with open(live_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_cli("predict", "sample", folder, out, "--weights", weights_dir)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == [".mood-vqad-tmp.LIVE", ".notes.txt", "a.nii.gz.txt"]
    assert result.stderr.count("by an earlier run that was killed") == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_abandons_the_case_and_keeps_written_outputs(weights_dir, tmp_path, signum):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    for i in range(12):
        save_nifti(folder / f"{i:02d}.nii.gz", phantom((48, 48, 48), seed=i))
    command = [sys.executable, "-m", "mood_vqad", "--no-progress", "predict", "pixel", folder, out]
    options = ["--weights", weights_dir, "--slice-stride", "1", "--restorations", "6", "--device", "cpu"]
    process = subprocess.Popen([*command, *options], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name == "00.nii.gz" for p in out.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}:" in stderr and "Traceback" not in stderr
    written = sorted(os.listdir(out))
    assert 1 <= len(written) < 12 and not [name for name in written if name.startswith(".")]
    for name in written:
        assert nib.load(str(out / name)).shape == (48, 48, 48)
