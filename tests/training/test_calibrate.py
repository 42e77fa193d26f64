"""Calibration of a weights folder in place: percentiles of the held-out NLL, scales, intact SHA256SUMS."""

import shutil

import numpy as np
import pytest
from helpers import phantom, save_nifti

from mood_vqad.config import PredictOptions
from mood_vqad.errors import CaseError
from mood_vqad.inference.detector import VQVAEDetector
from mood_vqad.inference.weights import load_weights
from mood_vqad.io import load_volume
from mood_vqad.training.calibrate import calibrate

PERCENTILES = {"sample": 98.0, "restore": 90.0, "pixel": 99.0}
CPU = PredictOptions(device="cpu", progress=False)


@pytest.fixture
def holdout(tmp_path):
    folder = tmp_path / "holdout"
    folder.mkdir()
    for seed in range(3):
        save_nifti(folder / f"n{seed}.nii.gz", phantom((32, 32, 12), seed=20 + seed))
    (folder / "notes.txt").write_text("not a volume")
    return folder


def test_weights_folder_is_calibrated_in_place(weights_dir, holdout, tmp_path):
    folder = tmp_path / "brain"
    shutil.copytree(weights_dir / "brain", folder)
    report = calibrate(folder, holdout, PERCENTILES, CPU)
    config, modules = load_weights(folder)  # SHA256SUMS must agree with the new config.json
    region = config.region
    assert report["values"]["restore_threshold"] == region.restore_threshold
    assert report["volumes"] == ["n0.nii.gz", "n1.nii.gz", "n2.nii.gz"]
    detector = VQVAEDetector.from_modules(config, modules, "cpu")
    settings = detector.settings_from(CPU)
    volumes = [load_volume(holdout / name)[0] for name in report["volumes"]]
    nll = [detector.code_nll(detector.encode(v, settings), settings).flatten().numpy() for v in volumes]
    nll = np.concatenate(nll)
    assert np.mean(nll > region.sample_threshold) == pytest.approx(0.02, abs=0.01)
    assert np.mean(nll > region.restore_threshold) == pytest.approx(0.10, abs=0.02)
    scores = sorted(detector.sample_score(v, settings) for v in volumes)
    assert scores[1] == pytest.approx(0.25, abs=1e-6), (
        "the median normal volume: mid plausible range [0, 0.5)"
    )
    pixel = detector.pixel_scores(volumes[0], settings)
    assert np.mean(pixel[volumes[0] > 0] > 0.5) < 0.05


def test_a_holdout_folder_without_volumes_fails(weights_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing")
    shutil.copytree(weights_dir / "brain", tmp_path / "brain")
    with pytest.raises(CaseError, match="no held-out volume"):
        calibrate(tmp_path / "brain", tmp_path / "empty", PERCENTILES, CPU)
